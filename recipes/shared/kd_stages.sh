#!/usr/bin/env bash
# Stages 4-7 shared by the recipes: teachers, the soft-target cache, the students, decoding and the report.
# A recipe runs it after its stages 0-3, from the repository root, with every input given as a flag
# (the defaults below are the generic ones; recipes pass their own):
#
#   recipes/shared/kd_stages.sh --stage 4 --stop-stage 7 --exp exp/synth_digits --lang data/lang \
#       --train-cuts data/ali/synth_digits_cuts_train.jsonl.gz --valid-cuts data/ali/synth_digits_cuts_dev.jsonl.gz \
#       --test-cuts data/ali/synth_digits_cuts_test.jsonl.gz --tune-cuts data/ali/synth_digits_cuts_dev.jsonl.gz \
#       --recipe-settings "name=synth_digits hours=1.0 seed=42"
#
# Students: every configuration is trained once per seed of $student_seeds (the report pairs them by seed):
#   student-hard-f<pct>-s<seed>, student-kd-f<pct>-s<seed>   hard labels / distilled on <pct>% of the labeled
#                                  training cuts, for each <pct> of $fractions (the data-size curve; 100: Table 1)
#   student-kd-transfer-s<seed>    distilled on all the labeled cuts plus the unlabeled $transfer_cuts
#   student-kd-T<T>-s<seed>        distilled at each T of $sweep_temperatures (seeds $sweep_seeds)
# Outputs under $exp: teacher-<i>/, cache-T<T>/ (splits train, and transfer with $transfer_cuts),
# teachers.json, the students above, students.json, decode/ (recogs-*, errs-*, wer-summary-*,
# utt-errors-*, result-*.json), recipe_config.json (every setting below, resolved), results.json,
# RESULTS.md, temperature_sweep.png, data_size_curve.png.
set -euo pipefail

stage=4
stop_stage=7
exp=""              # the recipe's experiment directory (the aligner's pdf_counts.txt in $exp/align)
lang=""             # the lang directory
train_cuts=""       # aligned cuts (frame_labels) the models train on
valid_cuts=""       # aligned cuts for validation (best checkpoint) and frame accuracy
test_cuts=""        # aligned cuts decoded in stage 7
tune_cuts=""        # dev cuts for the acoustic scale ("" if there are none: then acoustic_scale is a number)
nj=2                # parallel decoding jobs of each `asr-kd decode`
jobs=1              # models trained (stages 4, 6) and decoded (stage 7) at once, each on cores/jobs threads
                    # (on the shared 2-core machine bench/bench_train.py measured the TDNN student at 17.2k
                    # frames/s on 1 thread and 4.8k on 2: one-thread jobs side by side pay on a CPU);
                    # with jobs > 1 each one's output goes to $exp/log/<stage>-<name>.log
device=auto
teachers="tdnn:teacher:1 blstm:teacher:2 tdnn:teacher:3"   # arch:size:seed of each teacher (>= 2 archs)
teacher_epochs=8
spec_augment=false  # SpecAugment masking of the training features
max_duration=100    # seconds of audio per batch
lr=2e-3             # AdamW peak learning rate of every model
warmup_steps=40
num_workers=0       # DataLoader workers (0: load in the training process)
save_every_n=500    # optimizer steps between mid-epoch resumable checkpoints (last.pt; 0: epoch ends only)
temperature=2.0     # of the cached ensemble posteriors
k=0                 # pdfs kept per frame in the cache (0: dense fp16)
student="tdnn:student"  # arch:size of the student
student_seeds="7 8 9"   # every student configuration is trained once per seed
alpha=0.5           # weight of the soft-target term on all the data (and with the transfer set)
fractions="1:60 3:40 10:25 30:15 100:12"  # <percent of the labeled training cuts>:<epochs> of each student pair
small_alpha=0.9     # alpha of the distilled students on less than 100% of the data
table5_fraction=0.03  # the report's Table 5 rows and the gap closed (one of $fractions, as a share)
transfer_cuts=""    # unlabeled cuts (no frame_labels): cached as split "transfer", then student-kd-transfer-s<seed>
sweep_temperatures="1 4"  # extra distilled students at these temperatures (besides $temperature), all the data
sweep_seeds=""      # seeds of the sweep students ("": $student_seeds)
lm_order=3          # n-gram LM of the decoding graph, trained on the training transcripts
lm_text=""          # a text file (one sentence per line) that trains the LM instead ("": the training transcripts)
gmm_systems="mono:align/mono.gmm.pt tri1:align/tri1.gmm.pt tri2:align/tri2.gmm.pt"  # name:path under $exp of each GMM-HMM system decoded first (the ladder; missing ones are left out)
acoustic_scale=tune # "tune": the scale of lowest dev WER per model (needs --tune-cuts); or a number
tune_scales="0.06 0.08 0.1 0.12 0.15 0.2 0.3"  # the acoustic scales tried on the tune cuts
word_penalties="0"  # word insertion penalties tried at every tuned scale (Kaldi's score.sh grid: "0 0.5 1")
self_loop_scale=0.1 # of the HMM transition costs in HCLG (Kaldi's mkgraph.sh --self-loop-scale; 1.0: plain HMM)
beam=scaled         # "fixed": the search beam is 13 at every acoustic scale (Kaldi's convention; an utterance
                    # without a final state is searched again, beam doubled); "scaled": 13 * scale / 0.1 above 0.1
                    # (fewer search errors, but 4-8x the search time at scales 0.2-0.3 on synth_rm's HCLG)
recipe_settings=""  # "key=value ..." of the calling recipe, stored under "recipe" in recipe_config.json
conf=""             # a file of variable assignments (e.g. recipes/<corpus>/conf/gpu.sh), applied before the flags

options=(stage stop_stage exp lang train_cuts valid_cuts test_cuts tune_cuts nj jobs device teachers teacher_epochs
         spec_augment max_duration lr warmup_steps num_workers save_every_n temperature k student student_seeds alpha
         fractions small_alpha table5_fraction transfer_cuts sweep_temperatures sweep_seeds lm_order lm_text gmm_systems
         acoustic_scale tune_scales word_penalties self_loop_scale beam)
. "$(dirname "$0")/load_conf.sh" "$@"
. "$(dirname "$0")/parse_options.sh"
. "$(dirname "$0")/log.sh"
[ "$stage" -le "$stop_stage" ] || exit 0  # nothing to run (a recipe checks its options this way first)
for required in exp lang train_cuts valid_cuts test_cuts; do
  [ -n "${!required}" ] || { echo "$0: --${required//_/-} is required" >&2; exit 1; }
done
mkdir -p "$exp/log"
[ -n "$sweep_seeds" ] || sweep_seeds=$student_seeds
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --jobs must be an integer >= 1, got '$jobs'" >&2; exit 1; }

# run_job LOGNAME CMD...: CMD in the background, at most $jobs at once (jobs=1: in the foreground, as
# before); wait_jobs waits for them all and fails if any failed. Each job gets $threads torch threads.
threads=$(( $(nproc) / jobs )); [ "$threads" -ge 1 ] || threads=1
failed_jobs=0
run_job() {
  local logname=$1; shift
  if [ "$jobs" -eq 1 ]; then "$@"; return; fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || failed_jobs=$((failed_jobs + 1)); done
  OMP_NUM_THREADS=$threads "$@" > "$exp/log/$logname.log" 2>&1 &
}
wait_jobs() {
  while [ -n "$(jobs -rp)" ]; do wait -n || failed_jobs=$((failed_jobs + 1)); done
  if [ "$failed_jobs" -gt 0 ]; then
    echo "$0: $failed_jobs job(s) failed; see $exp/log/" >&2; exit 1
  fi
}
share() { awk -v p="$1" 'BEGIN { printf "%g", p / 100 }'; }  # percent -> share of the training cuts
epochs_at() {  # the epochs of a percent of $fractions
  local spec; for spec in $fractions; do [ "${spec%%:*}" = "$1" ] && { echo "${spec#*:}"; return; }; done
  echo "$0: no entry for $1% in fractions='$fractions'" >&2; return 1
}
epochs_at 100 > /dev/null || exit 1  # the full-data students (Table 1, the sweep, the transfer set)

augment=(); [ "$spec_augment" = true ] || augment=(--no-spec-augment)
lm=(--lm-cuts "$train_cuts"); [ -z "$lm_text" ] || lm=(--lm-text "$lm_text")
eval_cuts=("$valid_cuts"); [ "$test_cuts" = "$valid_cuts" ] || eval_cuts+=("$test_cuts")  # frame accuracy
tree=(); [ -f "$exp/align/tree.json" ] && tree=(--tree "$exp/align/tree.json")  # the targets' pdf count

teacher_ckpts() {  # the best checkpoint of each teacher of $teachers
  local i=0 spec
  for spec in $teachers; do echo "$exp/teacher-$i/best-valid-acc.pt"; i=$((i + 1)); done
}

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  i=0
  for spec in $teachers; do
    IFS=: read -r m_arch m_size m_seed <<< "$spec"
    log "Stage 4: teacher-$i ($m_arch, $m_size, seed $m_seed)"
    # resumes an interrupted run; returns at once when exp/.../done exists
    run_job "train-teacher-$i" asr-kd train --exp-dir "$exp/teacher-$i" --arch "$m_arch" --size "$m_size" --seed "$m_seed" \
      --lang-dir "$lang" "${tree[@]}" --train-cuts "$train_cuts" --valid-cuts "$valid_cuts" --num-epochs "$teacher_epochs" \
      --max-duration "$max_duration" --lr "$lr" --warmup-steps "$warmup_steps" --device "$device" \
      --num-workers "$num_workers" --save-every-n "$save_every_n" "${augment[@]}"
    i=$((i + 1))
  done
  wait_jobs
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  for t in $temperature $sweep_temperatures; do
    cache=$exp/cache-T$t
    [ -f "$cache/.done" ] && continue
    log "Stage 5: cache the ensemble's soft targets (T=$t, k=$k) -> $cache"
    storage=(--storage topk --k "$k"); [ "$k" -eq 0 ] && storage=(--storage dense)
    # shellcheck disable=SC2046
    asr-kd cache --teachers $(teacher_ckpts) --cuts "$train_cuts" --cache-dir "$cache" --temperature "$t" \
      "${storage[@]}" --device "$device" --log-file "$exp/log/cache.log"
    if [ -n "$transfer_cuts" ] && [ "$t" = "$temperature" ]; then  # unlabeled cuts: same teachers, split "transfer"
      log "Stage 5: cache the soft targets of the transfer cuts $transfer_cuts (T=$t)"
      # shellcheck disable=SC2046
      asr-kd cache --teachers $(teacher_ckpts) --cuts "$transfer_cuts" --split transfer --cache-dir "$cache" \
        --temperature "$t" "${storage[@]}" --device "$device" --log-file "$exp/log/cache.log"
    fi
    touch "$cache/.done"
  done
  log "Stage 5: frame accuracy of the teachers, their mean and the ensemble"
  # shellcheck disable=SC2046
  asr-kd evaluate --models $(teacher_ckpts) --device "$device" --json "$exp/teachers.json" \
    --cuts "${eval_cuts[@]}"
fi

# distill NAME SEED ALPHA T EPOCHS FRACTION [EXTRA FLAGS]: one student of $student (alpha 0: hard labels only)
distill() {
  local name=$1 seed=$2 a=$3 t=$4 epochs=$5 fraction=$6 arch size; shift 6
  IFS=: read -r arch size _ <<< "$student"
  log "Stage 6: $name ($arch, $size, seed $seed, alpha $a, T $t, $fraction of the data, $epochs epochs)"
  # shellcheck disable=SC2046
  run_job "distill-$name" asr-kd distill --exp-dir "$exp/$name" --arch "$arch" --size "$size" --seed "$seed" \
    --alpha "$a" --temperature "$t" --cache-dir "$exp/cache-T$t" --train-fraction "$fraction" \
    --teachers $(teacher_ckpts) --lang-dir "$lang" "${tree[@]}" --train-cuts "$train_cuts" --valid-cuts "$valid_cuts" \
    --num-epochs "$epochs" --max-duration "$max_duration" --lr "$lr" --warmup-steps "$warmup_steps" \
    --device "$device" --num-workers "$num_workers" --save-every-n "$save_every_n" "${augment[@]}" "$@"
}

# the students of every configuration: "<name> <role> <checkpoint>" lines, in training order
students() {
  local spec pct seed t a
  for seed in $student_seeds; do
    for spec in $fractions; do
      pct=${spec%%:*}
      echo "student-hard-f$pct-s$seed student_hard"
      echo "student-kd-f$pct-s$seed student_kd"
    done
    [ -z "$transfer_cuts" ] || echo "student-kd-transfer-s$seed student_kd"
  done
  for seed in $sweep_seeds; do
    for t in $sweep_temperatures; do echo "student-kd-T$t-s$seed student_kd_sweep"; done
  done
}

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  full=""
  for seed in $student_seeds; do
    for spec in $fractions; do
      pct=${spec%%:*} epochs=${spec#*:}
      a=$small_alpha; [ "$pct" = 100 ] && a=$alpha
      distill "student-hard-f$pct-s$seed" "$seed" 0 "$temperature" "$epochs" "$(share "$pct")"
      distill "student-kd-f$pct-s$seed" "$seed" "$a" "$temperature" "$epochs" "$(share "$pct")"
    done
    if [ -n "$transfer_cuts" ]; then
      distill "student-kd-transfer-s$seed" "$seed" "$alpha" "$temperature" "$(epochs_at 100)" 1 \
        --transfer-cuts "$transfer_cuts"
    fi
    full+=" $exp/student-hard-f100-s$seed/best-valid-acc.pt $exp/student-kd-f100-s$seed/best-valid-acc.pt"
  done
  for seed in $sweep_seeds; do
    for t in $sweep_temperatures; do
      distill "student-kd-T$t-s$seed" "$seed" "$alpha" "$t" "$(epochs_at 100)" 1
    done
  done
  wait_jobs
  # shellcheck disable=SC2086
  [ -z "$full" ] || asr-kd evaluate --models $full --device "$device" --json "$exp/students.json" \
    --cuts "${eval_cuts[@]}"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  if [ "$acoustic_scale" = tune ]; then
    [ -n "$tune_cuts" ] || { echo "acoustic_scale=tune needs tune_cuts (dev cuts)" >&2; exit 1; }
    # shellcheck disable=SC2206
    scale=(--tune-cuts "$tune_cuts" --tune-scales $tune_scales --tune-word-penalties $word_penalties)
  else
    scale=(--acoustic-scale "$acoustic_scale")
  fi
  scale+=(--self-loop-scale "$self_loop_scale")
  case $beam in
    fixed) scale+=(--fixed-beam) ;;
    scaled) ;;
    *) echo "$0: --beam must be fixed or scaled, got '$beam'" >&2; exit 1 ;;
  esac
  # the aligner's context tree and transitions, when it made context-dependent pdfs
  hmm=(); [ ! -f "$exp/align/tree.json" ] || hmm=(--tree "$exp/align/tree.json" --transitions "$exp/align/transitions.json")
  # decode NAME ROLE CHECKPOINT...: WER and frame accuracy on $test_cuts -> $exp/decode/
  # the first decode builds (and caches) the graph alone; the others run $jobs at once
  graph_built=false
  decode() {
    local name=$1 role=$2 job=run_job; shift 2
    [ "$graph_built" = true ] || job=""
    graph_built=true
    $job ${job:+"decode-$name"} asr-kd decode --models "$@" --name "$name" --role "$role" --cuts "$test_cuts" --lang-dir "$lang" \
      --pdf-counts "$exp/align/pdf_counts.txt" "${lm[@]}" --lm-order "$lm_order" "${scale[@]}" "${hmm[@]}" \
      --output-dir "$exp/decode" --nj "$nj" --device "$device" --log-file "$exp/log/decode.log"
  }
  log "Stage 7: decode the GMM-HMM systems ($gmm_systems) and every model on $test_cuts"
  for system in $gmm_systems; do
    gmm="$exp/${system#*:}"
    if [ ! -f "$gmm" ]; then log "no GMM system $gmm: ${system%%:*} left out of the ladder"; continue; fi
    asr-kd decode-gmm --gmm "$gmm" --name "${system%%:*}" --cuts "$test_cuts" --lang-dir "$lang" "${lm[@]}" \
      --lm-order "$lm_order" "${scale[@]}" --output-dir "$exp/decode" --nj "$nj" --log-file "$exp/log/decode.log"
  done
  i=0
  for _ in $teachers; do decode "teacher-$i" teacher "$exp/teacher-$i/best-valid-acc.pt"; i=$((i + 1)); done
  # shellcheck disable=SC2046
  decode ensemble ensemble $(teacher_ckpts)
  while read -r name role; do decode "$name" "$role" "$exp/$name/best-valid-acc.pt" < /dev/null; done < <(students)
  wait_jobs
  log "Stage 7: the results table -> $exp/results.json, $exp/RESULTS.md"
  settings=()
  for name in "${options[@]}"; do settings+=("$name=${!name}"); done
  for kv in $recipe_settings; do settings+=("recipe.$kv"); done
  asr-kd write-config "$exp/recipe_config.json" "${settings[@]}"
  asr-kd report "$exp"
fi
