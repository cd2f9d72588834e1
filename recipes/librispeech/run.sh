#!/usr/bin/env bash
# LibriSpeech (default: mini LibriSpeech, train-clean-5 + dev-clean-2) through the same stages as the
# synthetic recipe. Needs the corpus on disk, or internet for stage 0's download.
#
# Usage (from the repository root):
#   recipes/librispeech/run.sh                                  # download mini LibriSpeech, all stages
#   recipes/librispeech/run.sh --dl-dir /corpora --download false
#   recipes/librispeech/run.sh --dataset-parts "train-clean-100 dev-clean test-clean" --nj 16
#
# Stages:
#   0  download (unless --download false) and prepare -> data/manifests/librispeech_*.jsonl.gz, lexicon
#      (CMUdict, espeak-ng G2P for out-of-vocabulary words; data/manifests/librispeech_oov.txt)
#   1  features  80-dim fbank -> data/fbank/librispeech_cuts_<part>.jsonl.gz
#   2  lang      phones, words, HMM topology, pdf ids -> data/lang_librispeech/
#   3  align     flat-start monophone GMM-HMM (trained on $train_split) -> data/ali/librispeech_cuts_*
#   4  teachers  one model per entry of $teachers (arch:size:seed) -> exp/librispeech/teacher-<i>/
#   5  cache     ensemble posteriors at temperature $temperature (and $sweep_temperatures), top-$k ->
#                exp/librispeech/cache-T<T>/; frame accuracy of the teachers, their mean and the ensemble
#   6  distill   hard-label and distilled students per seed of $student_seeds on each share of $fractions, and the T sweep
#   7  decode    every model on $test_split (WER, frame accuracy), asr-kd report -> exp/librispeech/RESULTS.md
#   (stages 1-3 are recipes/shared/data_stages.sh and 4-7 recipes/shared/kd_stages.sh, as in
#   recipes/synth_digits/run.sh; the tests run stages 0-3 on a miniature corpus)
#
# Expected input tree (what stage 0 downloads):
#   $dl_dir/LibriSpeech/{train-clean-5,dev-clean-2}/<speaker>/<chapter>/*.flac, *.trans.txt
set -euo pipefail

stage=0
stop_stage=100
nj=2
max_skipped_share=0.05  # stages 1 and 3 fail when a split skips a larger share of its utterances/cuts
dl_dir=download
download=true
dataset_parts=mini_librispeech
train_split=train-clean-5              # the part the aligner (and later the models) train on
splits="train-clean-5 dev-clean-2"     # the parts to align
valid_split=dev-clean-2                # validation part of the models
test_split=dev-clean-2                 # decoded in stage 7 (mini LibriSpeech has no test part)
tune_split=""                          # dev part for the acoustic scale; "" keeps $acoustic_scale fixed
# Settings of stages 4-7 whose LibriSpeech values differ from recipes/shared/kd_stages.sh's defaults; the
# others (temperature, alpha, student_seeds, ...: `recipes/shared/kd_stages.sh --help`) are handed on.
teachers="tdnn:teacher:1 conformer:teacher:2 dnn:teacher:3"   # arch:size:seed of each teacher
teacher_epochs=10
spec_augment=true
max_duration=200
lr=1e-3
warmup_steps=200
num_workers=2
k=16              # top-k soft targets (0: dense)
fractions="3:30 100:10"  # percent of the labeled training cuts : student epochs
acoustic_scale=0.1  # a number, or "tune" with --tune-split (e.g. --test-split test-clean --tune-split dev-clean)
kd_settings=(teachers teacher_epochs spec_augment max_duration lr warmup_steps num_workers k fractions
             acoustic_scale)
device=auto
data=data
exp=exp/librispeech

. "$(dirname "$0")/../shared/prologue.sh" "$@"   # --conf, the flags, log(), cd to the repository root

manifests=$data/manifests
lang=$data/lang_librispeech
ali=$data/ali

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ "$download" = true ] && [ ! -f "$dl_dir/.librispeech.downloaded" ]; then
    log "Stage 0: download LibriSpeech ($dataset_parts) to $dl_dir"
    # shellcheck disable=SC2086
    asr-kd download librispeech --target-dir "$dl_dir" --dataset-parts $dataset_parts
    touch "$dl_dir/.librispeech.downloaded"
  fi
  log "Stage 0: prepare LibriSpeech manifests and lexicon"
  # no .done marker: the command skips a finished preparation (under a lock on $manifests)
  # shellcheck disable=SC2086
  asr-kd prepare librispeech --corpus-dir "$dl_dir/LibriSpeech" --output-dir "$manifests" \
    --dataset-parts $dataset_parts --nj "$nj" --log-file "$exp/log/prepare.log"
  asr-kd stats --manifest-dir "$manifests" --corpus librispeech > "$exp/corpus_stats.json"
fi

# stages 1-3: features, lang, alignment (shared with the other recipes)
recipes/shared/data_stages.sh --stage "$stage" --stop-stage "$stop_stage" --corpus librispeech --data "$data" \
  --lang "$lang" --exp "$exp" --nj "$nj" --max-skipped-share "$max_skipped_share" --align-opts "--splits $splits --train-split $train_split"

# stages 4-7: teachers, cache, students, decoding and the report (shared with the other recipes)
kd_flags=(); for name in "${kd_settings[@]}"; do kd_flags+=("--${name//_/-}" "${!name}"); done
tune_cuts=""; [ -n "$tune_split" ] && tune_cuts=$ali/librispeech_cuts_$tune_split.jsonl.gz
recipes/shared/kd_stages.sh --stage "$stage" --stop-stage "$stop_stage" --exp "$exp" --lang "$lang" \
  --train-cuts "$ali/librispeech_cuts_$train_split.jsonl.gz" --valid-cuts "$ali/librispeech_cuts_$valid_split.jsonl.gz" \
  --test-cuts "$ali/librispeech_cuts_$test_split.jsonl.gz" --tune-cuts "$tune_cuts" --nj "$nj" --device "$device" \
  --recipe-settings "name=librispeech dataset_parts=${dataset_parts// /,} train_split=$train_split" \
  "${kd_flags[@]}" ${conf:+--conf "$conf"} "${extra_options[@]}"

log "Done (stages $stage..$stop_stage)."
