#!/usr/bin/env bash
# synth_digits: the offline default recipe. Connected digits spoken by espeak-ng voices, ensemble
# teachers, distillation into one student, decoding and the results table.
#
# Usage (from the repository root):
#   recipes/synth_digits/run.sh                          # all stages
#   recipes/synth_digits/run.sh --stage 1 --stop-stage 1 # only the features
#   recipes/synth_digits/run.sh --hours 20 --nj 16       # a bigger corpus
#   recipes/synth_digits/run.sh --conf recipes/synth_digits/conf/gpu.sh   # GPU-sized (a file of settings)
#   recipes/synth_digits/run.sh --teacher-epochs 4       # any setting of recipes/shared/kd_stages.sh --help
#
# Stages:
#   0  prepare   synthesize the corpus -> data/manifests/synth_digits_*.jsonl.gz, lexicon
#   1  features  80-dim fbank          -> data/fbank/synth_digits_cuts_{train,dev,test}.jsonl.gz
#   2  lang      phones, words, HMM topology, pdf ids -> data/lang/
#   3  align     flat-start monophone GMM-HMM, Viterbi  -> data/ali/synth_digits_cuts_*.jsonl.gz
#                (frame_labels), exp/synth_digits/align/{report.json,report.txt,pdf_counts.txt}
#   (stages 1-3 are recipes/shared/data_stages.sh, stages 4-7 recipes/shared/kd_stages.sh; `--help` of
#   each lists its settings)
#   4  teachers  one model per entry of $teachers (arch:size:seed) -> exp/synth_digits/teacher-<i>/
#   5  cache     ensemble posteriors at $temperature and each of $sweep_temperatures (dense, or top-$k)
#                -> exp/synth_digits/cache-T<T>/; frame accuracy of each teacher, their mean and the
#                ensemble -> exp/synth_digits/teachers.json
#   6  distill   the student ($student, arch:size) once per seed of $student_seeds: hard labels (alpha 0) and
#                distilled, on each percentage of $fractions of the training cuts ->
#                student-{hard,kd}-f<pct>-s<seed>/; distilled at each T of $sweep_temperatures ->
#                student-kd-T<T>-s<seed>/ (and with --transfer-cuts: student-kd-transfer-s<seed>/)
#   7  decode    every model and the ensemble on the test split (HCLG, kaldi-decoder, jiwer) ->
#                exp/synth_digits/decode/; asr-kd report -> exp/synth_digits/{results.json,RESULTS.md,
#                temperature_sweep.png,data_size_curve.png}, and prints the tables
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
max_skipped_share=0.05  # stages 1 and 3 fail when a split skips a larger share of its utterances/cuts
data=data       # data directory (manifests, features, lang)
exp=exp/synth_digits
device=auto
# The settings of stages 4-7 (teachers, epochs, temperature, student, ...) are recipes/shared/kd_stages.sh's
# (`recipes/shared/kd_stages.sh --help`); their defaults there are this recipe's. Any of them given here
# (`--teacher-epochs 3`) or in a --conf file is handed on to it.

. "$(dirname "$0")/../shared/prologue.sh" "$@"   # --conf, the flags, log(), cd to the repository root

manifests=$data/manifests
ali=$data/ali

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "Stage 0: synthesize synth_digits ($hours h, seed $seed)"
  # no .done marker: the command skips the splits it finished (under a lock on $manifests)
  asr-kd prepare synth_digits --output-dir "$manifests" --hours "$hours" --seed "$seed" --nj "$nj" \
    --log-file "$exp/log/prepare.log"
  asr-kd stats --manifest-dir "$manifests" --corpus synth_digits > "$exp/corpus_stats.json"
fi

# stages 1-3: features, lang, alignment (shared with the other recipes)
# synth_digits aligns with the monophones alone: on its 13-word vocabulary the triphone passes were
# measured to agree less with the true phones (recipes/synth_digits/RESULTS.md, alignment)
recipes/shared/data_stages.sh --stage "$stage" --stop-stage "$stop_stage" --corpus synth_digits --data "$data" \
  --exp "$exp" --nj "$nj" --max-skipped-share "$max_skipped_share" --align-opts "--passes"

# stages 4-7: teachers, cache, students, decoding and the report (shared with the other recipes)
recipes/shared/kd_stages.sh --stage "$stage" --stop-stage "$stop_stage" --exp "$exp" --lang "$data/lang" \
  --train-cuts "$ali/synth_digits_cuts_train.jsonl.gz" --valid-cuts "$ali/synth_digits_cuts_dev.jsonl.gz" \
  --test-cuts "$ali/synth_digits_cuts_test.jsonl.gz" --tune-cuts "$ali/synth_digits_cuts_dev.jsonl.gz" \
  --nj "$nj" --device "$device" --recipe-settings "name=synth_digits hours=$hours seed=$seed nj=$nj" \
  ${conf:+--conf "$conf"} "${extra_options[@]}"

log "Done (stages $stage..$stop_stage)."
