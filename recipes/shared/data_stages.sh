#!/usr/bin/env bash
# Stages 1-3 shared by the recipes: features, the lang directory, forced alignment. A recipe runs its own
# stage 0 (prepare) and then this script, from the repository root, with every input given as a flag:
#
#   recipes/shared/data_stages.sh --stage 1 --stop-stage 3 --corpus synth_digits --data data \
#       --exp exp/synth_digits --nj 2 [--lang data/lang] [--max-skipped-share 0.05] \
#       [--align-opts "--splits train dev test"]
#
# Inputs: $data/manifests/<corpus>_{recordings,supervisions}_<split>.jsonl.gz and <corpus>_lexicon.txt
# (stage 0). Outputs:
#   1  features  80-dim fbank -> $data/fbank/<corpus>_cuts_<split>.jsonl.gz
#   2  lang      phones, words, HMM topology, pdf ids, L.fst -> $lang
#   3  align     flat-start GMM-HMM aligner -> $data/ali/<corpus>_cuts_<split>.jsonl.gz (frame_labels),
#                $exp/align/{report.json,report.txt,pdf_counts.txt}
# No .done markers: each command holds a lock on its output directory, checks what an earlier run finished
# (recorded sizes/checksums, the lang and config it was built for) and redoes only what is missing or damaged.
set -euo pipefail

stage=1
stop_stage=3
corpus=""        # manifest prefix, e.g. synth_digits
data=data        # holds manifests/ (stage 0); fbank/, ali/ and the default lang/ are written here
lang=""          # the lang directory ("": $data/lang)
exp=""           # the recipe's experiment directory; the aligner goes to $exp/align
nj=2             # parallel jobs
align_opts=""    # extra flags of `asr-kd align` (e.g. --splits, --train-split, --reference-phones)
max_skipped_share=0.05  # stages 1 and 3 fail when a split skips a larger share of its utterances/cuts

. "$(dirname "$0")/parse_options.sh"
. "$(dirname "$0")/log.sh"
[ -n "$corpus" ] && [ -n "$exp" ] || { echo "$0: --corpus and --exp are required" >&2; exit 1; }
lang=${lang:-$data/lang}
manifests=$data/manifests
fbank=$data/fbank
ali=$data/ali
mkdir -p "$exp/log"

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: compute fbank features of $corpus"
  asr-kd features --manifest-dir "$manifests" --corpus "$corpus" --output-dir "$fbank" --nj "$nj" \
    --max-skipped-share "$max_skipped_share" --log-file "$exp/log/features.log"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: prepare $lang"
  asr-kd lang --lexicon "$manifests/${corpus}_lexicon.txt" --lang-dir "$lang" --log-file "$exp/log/lang.log"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "Stage 3: flat-start forced alignment of $corpus"
  # shellcheck disable=SC2086
  asr-kd align --cuts-dir "$fbank" --corpus "$corpus" --lang-dir "$lang" --output-dir "$ali" \
    --exp-dir "$exp/align" --nj "$nj" --max-skipped-share "$max_skipped_share" --log-file "$exp/log/align.log" \
    $align_opts
  [ -f "$exp/align/report.txt" ] && cat "$exp/align/report.txt"
fi
exit 0
