#!/usr/bin/env bash
# synth_digits: the offline default recipe. Connected digits spoken by espeak-ng voices, ensemble
# teachers, distillation into one student (stages are added as the toolkit grows).
#
# Usage (from the repository root):
#   recipes/synth_digits/run.sh                          # all stages
#   recipes/synth_digits/run.sh --stage 1 --stop-stage 1 # only the features
#   recipes/synth_digits/run.sh --hours 20 --nj 16       # a bigger corpus
#
# Stages:
#   0  prepare   synthesize the corpus -> data/manifests/synth_digits_*.jsonl.gz, lexicon
#   1  features  80-dim fbank          -> data/fbank/synth_digits_cuts_{train,dev,test}.jsonl.gz
#   2  lang      phones, words, HMM topology, pdf ids -> data/lang/
#   3  align     flat-start monophone GMM-HMM, Viterbi  -> data/ali/synth_digits_cuts_*.jsonl.gz
#                (frame_labels), exp/synth_digits/align/{report.json,report.txt,pdf_counts.txt}
#   4  teachers  one model per entry of $teachers (arch:size:seed) -> exp/synth_digits/teacher-<i>/
#   5  cache     ensemble posteriors at temperature $temperature, top-$k -> exp/synth_digits/cache-T<T>/;
#                frame accuracy of each teacher, their mean and the ensemble -> exp/synth_digits/teachers.json
#   6  distill   the student ($student, arch:size:seed) twice: hard labels (alpha 0) -> student-hard/,
#                and distilled from the cache (alpha $alpha, T $temperature) -> student-kd/;
#                frame accuracy of both -> exp/synth_digits/students.json
#
# Output tree:
#   data/manifests/  synth_digits_{recordings,supervisions}_{train,dev,test}.jsonl.gz, wav/
#   data/fbank/      synth_digits_cuts_*.jsonl.gz, synth_digits_feats_*/
#   data/lang/       phones.txt words.txt lexicon*.txt topo.json pdfs.txt L*.fst lang.json
#   data/ali/        synth_digits_cuts_*.jsonl.gz with frame_labels, synth_digits_frame_labels_*.h5
#   exp/synth_digits/log/   one log per stage
set -euo pipefail

stage=0
stop_stage=100
nj=2            # parallel jobs
hours=1.0       # corpus size, all splits together
seed=42
data=data       # data directory (manifests, features, lang)
exp=exp/synth_digits
teachers="dnn:teacher:1 tdnn:teacher:2 dnn:teacher:3"   # arch:size:seed of each teacher
teacher_epochs=6
max_duration=100  # seconds of audio per batch
temperature=2.0   # of the cached ensemble posteriors
k=16              # pdfs kept per frame in the cache (0: dense fp16)
student="dnn:student:7"  # arch:size:seed of the student (a teacher is ~6x its size)
alpha=0.5         # weight of the soft-target term in the distillation loss
device=auto

conf=""          # a file of variable assignments (e.g. conf/gpu.sh), applied before the flags
. "$(dirname "$0")/../shared/load_conf.sh" "$@"
. "$(dirname "$0")/../shared/parse_options.sh"
. "$(dirname "$0")/../shared/log.sh"
cd "$(dirname "$0")/../.."   # recipes run from the repository root

manifests=$data/manifests
fbank=$data/fbank
lang=$data/lang
ali=$data/ali
mkdir -p "$exp/log"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: synthesize synth_digits ($hours h, seed $seed)"
  if [ ! -f "$manifests/.synth_digits.done" ]; then
    asr-kd prepare synth_digits --output-dir "$manifests" --hours "$hours" --seed "$seed" --nj "$nj" \
      --log-file "$exp/log/prepare.log"
    touch "$manifests/.synth_digits.done"
  fi
  asr-kd stats --manifest-dir "$manifests" --corpus synth_digits > "$exp/corpus_stats.json"
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: compute fbank features"
  if [ ! -f "$fbank/.synth_digits.done" ]; then
    asr-kd features --manifest-dir "$manifests" --corpus synth_digits --output-dir "$fbank" --nj "$nj" \
      --log-file "$exp/log/features.log"
    touch "$fbank/.synth_digits.done"
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: prepare $lang"
  if [ ! -f "$lang/.done" ]; then
    asr-kd lang --lexicon "$manifests/synth_digits_lexicon.txt" --lang-dir "$lang" \
      --log-file "$exp/log/lang.log"
    touch "$lang/.done"
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: flat-start forced alignment"
  if [ ! -f "$ali/.synth_digits.done" ]; then
    asr-kd align --cuts-dir "$fbank" --corpus synth_digits --lang-dir "$lang" --output-dir "$ali" \
      --exp-dir "$exp/align" --nj "$nj" --log-file "$exp/log/align.log"
    touch "$ali/.synth_digits.done"
  fi
  cat "$exp/align/report.txt"
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  i=0
  for spec in $teachers; do
    IFS=: read -r arch size seed <<< "$spec"
    log "Stage 4: teacher-$i ($arch, $size, seed $seed)"
    # resumes an interrupted run; returns at once when exp/.../done exists
    asr-kd train --exp-dir "$exp/teacher-$i" --arch "$arch" --size "$size" --seed "$seed" \
      --lang-dir "$lang" --train-cuts "$ali/synth_digits_cuts_train.jsonl.gz" \
      --valid-cuts "$ali/synth_digits_cuts_dev.jsonl.gz" --num-epochs "$teacher_epochs" \
      --max-duration "$max_duration" --lr 2e-3 --warmup-steps 40 --device "$device"
    i=$((i + 1))
  done
fi

teacher_ckpts() {  # the best checkpoint of each teacher of $teachers
  local i=0 spec
  for spec in $teachers; do echo "$exp/teacher-$i/best-valid-acc.pt"; i=$((i + 1)); done
}

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: cache the ensemble's soft targets (T=$temperature, k=$k)"
  cache=$exp/cache-T$temperature
  if [ ! -f "$cache/.done" ]; then
    storage=(--storage topk --k "$k"); [ "$k" -eq 0 ] && storage=(--storage dense)
    # shellcheck disable=SC2046
    asr-kd cache --teachers $(teacher_ckpts) --cuts "$ali/synth_digits_cuts_train.jsonl.gz" \
      --cache-dir "$cache" --temperature "$temperature" "${storage[@]}" --device "$device" \
      --log-file "$exp/log/cache.log"
    touch "$cache/.done"
  fi
  log "Stage 5: frame accuracy of the teachers, their mean and the ensemble"
  # shellcheck disable=SC2046
  asr-kd evaluate --models $(teacher_ckpts) --device "$device" --json "$exp/teachers.json" \
    --cuts "$ali/synth_digits_cuts_dev.jsonl.gz" "$ali/synth_digits_cuts_test.jsonl.gz"
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  IFS=: read -r arch size seed <<< "$student"
  for run in hard kd; do
    a=$alpha; [ $run = hard ] && a=0
    log "Stage 6: student-$run ($arch, $size, seed $seed, alpha $a, T $temperature)"
    # shellcheck disable=SC2046
    asr-kd distill --exp-dir "$exp/student-$run" --arch "$arch" --size "$size" --seed "$seed" \
      --alpha "$a" --temperature "$temperature" --cache-dir "$exp/cache-T$temperature" \
      --teachers $(teacher_ckpts) --lang-dir "$lang" --train-cuts "$ali/synth_digits_cuts_train.jsonl.gz" \
      --valid-cuts "$ali/synth_digits_cuts_dev.jsonl.gz" --num-epochs "$teacher_epochs" \
      --max-duration "$max_duration" --lr 2e-3 --warmup-steps 40 --device "$device"
  done
  asr-kd evaluate --models "$exp/student-hard/best-valid-acc.pt" "$exp/student-kd/best-valid-acc.pt" \
    --device "$device" --json "$exp/students.json" \
    --cuts "$ali/synth_digits_cuts_dev.jsonl.gz" "$ali/synth_digits_cuts_test.jsonl.gz"
fi

log "Done (stages $stage..$stop_stage)."
