#!/usr/bin/env bash
# synth_digits: the offline default recipe. Connected digits spoken by espeak-ng voices, ensemble
# teachers, distillation into one student, decoding and the results table.
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
#   5  cache     ensemble posteriors at $temperature and each of $sweep_temperatures (dense, or top-$k)
#                -> exp/synth_digits/cache-T<T>/; frame accuracy of each teacher, their mean and the
#                ensemble -> exp/synth_digits/teachers.json
#   6  distill   the student ($student, arch:size:seed): hard labels (alpha 0) -> student-hard/; distilled
#                (alpha $alpha, T $temperature) -> student-kd/; both on $small_fraction of the data ->
#                student-{hard,kd}-small/; distilled at each T of $sweep_temperatures -> student-kd-T<T>/
#   7  decode    every model and the ensemble on the test split (HCLG, kaldi-decoder, jiwer) ->
#                exp/synth_digits/decode/; asr-kd report -> exp/synth_digits/{results.json,RESULTS.md,
#                temperature_sweep.png}, and prints the tables
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
teachers="tdnn:teacher:1 tdnn:teacher:2 tdnn:teacher:3"   # arch:size:seed of each teacher
teacher_epochs=8
spec_augment=false  # SpecAugment lowered every model's accuracy at these budgets (RESULTS.md)
max_duration=100  # seconds of audio per batch
lr=2e-3           # AdamW peak learning rate of every model
warmup_steps=40
temperature=2.0   # of the cached ensemble posteriors
k=0               # pdfs kept per frame in the cache (0: dense fp16; top-k pays only for large pdf sets)
student="tdnn:student:7"  # arch:size:seed of the student (a teacher is ~7.7x its size)
student_epochs=12
alpha=0.5         # weight of the soft-target term in the distillation loss
small_fraction=0.03  # the paper's Table 5: students trained on 3% of the training data
small_epochs=50
small_alpha=0.9
sweep_temperatures="1 4"  # extra distilled students at these temperatures (besides $temperature)
lm_order=3        # n-gram LM of the decoding graph, trained on the training transcripts
acoustic_scale=tune  # "tune": the scale of lowest dev WER per model (asr-kd decode --tune-cuts); or a number
num_workers=0     # DataLoader workers; on 2 CPU cores loading in the training process is fastest
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

# stages 4-7: teachers, cache, students, decoding and the report
train_cuts=$ali/synth_digits_cuts_train.jsonl.gz
valid_cuts=$ali/synth_digits_cuts_dev.jsonl.gz
test_cuts=$ali/synth_digits_cuts_test.jsonl.gz
tune_cuts=$valid_cuts
recipe_config="{\"name\": \"synth_digits\", \"hours\": $hours, \"seed\": $seed, \"nj\": $nj}"
. recipes/shared/kd_stages.sh

log "Done (stages $stage..$stop_stage)."
