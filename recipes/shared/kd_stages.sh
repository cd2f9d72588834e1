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
# Outputs under $exp: teacher-<i>/, cache-T<T>/, teachers.json, student-{hard,kd}/, student-{hard,kd}-small/,
# student-kd-T<T>/, students.json, decode/ (recogs-*, errs-*, wer-summary-*, result-*.json),
# recipe_config.json (every setting below, resolved), results.json, RESULTS.md, temperature_sweep.png.
set -euo pipefail

stage=4
stop_stage=7
exp=""              # the recipe's experiment directory (the aligner's pdf_counts.txt in $exp/align)
lang=""             # the lang directory
train_cuts=""       # aligned cuts (frame_labels) the models train on
valid_cuts=""       # aligned cuts for validation (best checkpoint) and frame accuracy
test_cuts=""        # aligned cuts decoded in stage 7
tune_cuts=""        # dev cuts for the acoustic scale ("" if there are none: then acoustic_scale is a number)
nj=2                # parallel decoding jobs
device=auto
teachers="tdnn:teacher:1 tdnn:teacher:2 tdnn:teacher:3"   # arch:size:seed of each teacher
teacher_epochs=8
spec_augment=false  # SpecAugment masking of the training features
max_duration=100    # seconds of audio per batch
lr=2e-3             # AdamW peak learning rate of every model
warmup_steps=40
num_workers=0       # DataLoader workers (0: load in the training process)
save_every_n=500    # optimizer steps between mid-epoch resumable checkpoints (last.pt; 0: epoch ends only)
temperature=2.0     # of the cached ensemble posteriors
k=0                 # pdfs kept per frame in the cache (0: dense fp16)
student="tdnn:student:7"  # arch:size:seed of the student
student_epochs=12
alpha=0.5           # weight of the soft-target term in the distillation loss
small_fraction=0.03 # the paper's Table 5: students trained on this share of the training data
small_epochs=50
small_alpha=0.9
sweep_temperatures="1 4"  # extra distilled students at these temperatures (besides $temperature)
lm_order=3          # n-gram LM of the decoding graph, trained on the training transcripts
lm_text=""          # a text file (one sentence per line) that trains the LM instead ("": the training transcripts)
gmm_systems="mono:align/mono.gmm.pt tri1:align/tri1.gmm.pt tri2:align/tri2.gmm.pt"  # name:path under $exp of each GMM-HMM system decoded first (the ladder; missing ones are left out)
acoustic_scale=tune # "tune": the scale of lowest dev WER per model (needs --tune-cuts); or a number
recipe_settings=""  # "key=value ..." of the calling recipe, stored under "recipe" in recipe_config.json
conf=""             # a file of variable assignments (e.g. recipes/<corpus>/conf/gpu.sh), applied before the flags

options=(stage stop_stage exp lang train_cuts valid_cuts test_cuts tune_cuts nj device teachers teacher_epochs
         spec_augment max_duration lr warmup_steps num_workers save_every_n temperature k student student_epochs alpha
         small_fraction small_epochs small_alpha sweep_temperatures lm_order lm_text gmm_systems acoustic_scale)
. "$(dirname "$0")/load_conf.sh" "$@"
. "$(dirname "$0")/parse_options.sh"
. "$(dirname "$0")/log.sh"
[ "$stage" -le "$stop_stage" ] || exit 0  # nothing to run (a recipe checks its options this way first)
for required in exp lang train_cuts valid_cuts test_cuts; do
  [ -n "${!required}" ] || { echo "$0: --${required//_/-} is required" >&2; exit 1; }
done
mkdir -p "$exp/log"

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
    asr-kd train --exp-dir "$exp/teacher-$i" --arch "$m_arch" --size "$m_size" --seed "$m_seed" \
      --lang-dir "$lang" "${tree[@]}" --train-cuts "$train_cuts" --valid-cuts "$valid_cuts" --num-epochs "$teacher_epochs" \
      --max-duration "$max_duration" --lr "$lr" --warmup-steps "$warmup_steps" --device "$device" \
      --num-workers "$num_workers" --save-every-n "$save_every_n" "${augment[@]}"
    i=$((i + 1))
  done
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
    touch "$cache/.done"
  done
  log "Stage 5: frame accuracy of the teachers, their mean and the ensemble"
  # shellcheck disable=SC2046
  asr-kd evaluate --models $(teacher_ckpts) --device "$device" --json "$exp/teachers.json" \
    --cuts "${eval_cuts[@]}"
fi

# distill NAME ALPHA T EPOCHS FRACTION: one student of $student (alpha 0: hard labels only)
distill() {
  local name=$1 a=$2 t=$3 epochs=$4 fraction=$5 arch size seed
  IFS=: read -r arch size seed <<< "$student"
  log "Stage 6: $name ($arch, $size, seed $seed, alpha $a, T $t, $fraction of the data, $epochs epochs)"
  # shellcheck disable=SC2046
  asr-kd distill --exp-dir "$exp/$name" --arch "$arch" --size "$size" --seed "$seed" \
    --alpha "$a" --temperature "$t" --cache-dir "$exp/cache-T$t" --train-fraction "$fraction" \
    --teachers $(teacher_ckpts) --lang-dir "$lang" "${tree[@]}" --train-cuts "$train_cuts" --valid-cuts "$valid_cuts" \
    --num-epochs "$epochs" --max-duration "$max_duration" --lr "$lr" --warmup-steps "$warmup_steps" \
    --device "$device" --num-workers "$num_workers" --save-every-n "$save_every_n" "${augment[@]}"
}

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  distill student-hard 0 "$temperature" "$student_epochs" 1
  distill student-kd "$alpha" "$temperature" "$student_epochs" 1
  distill student-hard-small 0 "$temperature" "$small_epochs" "$small_fraction"
  distill student-kd-small "$small_alpha" "$temperature" "$small_epochs" "$small_fraction"
  for t in $sweep_temperatures; do
    distill "student-kd-T$t" "$alpha" "$t" "$student_epochs" 1
  done
  asr-kd evaluate --models "$exp/student-hard/best-valid-acc.pt" "$exp/student-kd/best-valid-acc.pt" \
    --device "$device" --json "$exp/students.json" --cuts "${eval_cuts[@]}"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  if [ "$acoustic_scale" = tune ]; then
    [ -n "$tune_cuts" ] || { echo "acoustic_scale=tune needs tune_cuts (dev cuts)" >&2; exit 1; }
    scale=(--tune-cuts "$tune_cuts")
  else
    scale=(--acoustic-scale "$acoustic_scale")
  fi
  # the aligner's context tree and transitions, when it made context-dependent pdfs
  hmm=(); [ ! -f "$exp/align/tree.json" ] || hmm=(--tree "$exp/align/tree.json" --transitions "$exp/align/transitions.json")
  # decode NAME ROLE CHECKPOINT...: WER and frame accuracy on $test_cuts -> $exp/decode/
  decode() {
    local name=$1 role=$2; shift 2
    asr-kd decode --models "$@" --name "$name" --role "$role" --cuts "$test_cuts" --lang-dir "$lang" \
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
  decode student-hard student_hard "$exp/student-hard/best-valid-acc.pt"
  decode student-kd student_kd "$exp/student-kd/best-valid-acc.pt"
  decode student-hard-small student_hard "$exp/student-hard-small/best-valid-acc.pt"
  decode student-kd-small student_kd "$exp/student-kd-small/best-valid-acc.pt"
  for t in $sweep_temperatures; do
    decode "student-kd-T$t" student_kd_sweep "$exp/student-kd-T$t/best-valid-acc.pt"
  done
  log "Stage 7: the results table -> $exp/results.json, $exp/RESULTS.md"
  settings=()
  for name in "${options[@]}"; do settings+=("$name=${!name}"); done
  for kv in $recipe_settings; do settings+=("recipe.$kv"); done
  settings+=("table5_fraction=$small_fraction")  # the report's Table 5 rows
  asr-kd write-config "$exp/recipe_config.json" "${settings[@]}"
  asr-kd report "$exp"
fi
