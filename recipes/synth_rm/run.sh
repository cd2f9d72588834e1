#!/usr/bin/env bash
# synth_rm: read sentences over a 1,131-word naval resource-management vocabulary (RM-like), spoken by
# espeak-ng voices; ensemble teachers, distillation into one student, decoding and the results table.
#
# Usage (from the repository root):
#   recipes/synth_rm/run.sh                            # all stages
#   recipes/synth_rm/run.sh --stop-stage 3             # corpus, features, lang, alignment
#   recipes/synth_rm/run.sh --hours 20 --nj 16         # a bigger corpus (--hours scales every split)
#   recipes/synth_rm/run.sh --clean-copies true        # also the noise-free parallel recordings
#   recipes/synth_rm/run.sh --teacher-epochs 4         # any setting of recipes/shared/kd_stages.sh --help
#
# Stages:
#   0  prepare   synthesize the corpus -> data/manifests/synth_rm_*.jsonl.gz (train, dev, test and the
#                unlabeled transfer split), synth_rm_lexicon.txt, synth_rm_lm_text.txt; statistics
#                (word/phone/triphone types, test OOV rate, LM perplexity) -> exp/synth_rm/corpus_stats.json
#   1  features  80-dim fbank of every split      -> data/fbank/synth_rm_cuts_<split>.jsonl.gz
#   2  lang      phones, words, HMM topology, pdfs -> data/lang_synth_rm/
#   3  align     flat-start GMM-HMM on train; train, dev and test aligned (transfer has no text)
#                -> data/ali/synth_rm_cuts_{train,dev,test}.jsonl.gz, exp/synth_rm/align/report.{json,txt}
#                (frame agreement and boundary accuracy against the synthesizer's phones)
#   (stages 1-3 are recipes/shared/data_stages.sh, stages 4-7 recipes/shared/kd_stages.sh)
#   4-7          teachers, soft-target cache (train and transfer splits), students (hard and distilled on
#                each fraction, with the unlabeled transfer split, the temperature sweep; every one per seed),
#                decoding and the report, as in synth_digits; the decoding LM is trained on
#                synth_rm_lm_text.txt (no test sentence is in it)
set -euo pipefail

stage=0
stop_stage=100
nj=2              # parallel jobs
hours=2.0         # corpus size, all splits together (train/dev/test/transfer: 0.5/0.06/0.28/0.16)
seed=42
max_skipped_share=0.05  # stages 1 and 3 fail when a split skips a larger share of its utterances/cuts
clean_copies=false  # true: also write the noise-free parallel recordings (corpus synth_rm_clean)
data=data         # data directory (manifests, features, lang, alignments)
exp=exp/synth_rm
device=auto
# Stages 4-7 (recipes/shared/kd_stages.sh --help lists every setting; any given here, `--alpha 0.7`, or in a
# --conf file is handed on). This recipe's own choices, sized for 2 CPU cores:
teachers="tdnn:teacher:1 dnn:teacher:2 tdnn:teacher:3"  # 3 teachers, 2 architectures (2.5-2.8M parameters;
                            # a BLSTM or Conformer teacher trains 3-6x slower on a CPU: conf/gpu.sh has them)
teacher_epochs=6
jobs=3                      # models trained/decoded at once, 1 thread each (3 teachers on 2 cores)
student="tdnn:student"      # 0.34M parameters: 7x smaller than the smallest teacher
student_seeds="7 8 9"
fractions="1:40 3:30 10:20 30:10 100:6"  # percent of the labeled training cuts : epochs
sweep_temperatures=""       # extra distilled students at these T (e.g. "1 4"; off by default: CPU time)
sweep_seeds="7"
beam=fixed                  # Kaldi's fixed search beam (+ retries): the scaled beam is ~100x slower on this HCLG

. "$(dirname "$0")/../shared/prologue.sh" "$@"   # --conf, the flags, log(), cd to the repository root

manifests=$data/manifests
ali=$data/ali
lang=$data/lang_synth_rm

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "Stage 0: synthesize synth_rm ($hours h, seed $seed)"
  clean=(); [ "$clean_copies" = true ] && clean=(--clean-copies)
  # no .done marker: the command skips the splits it finished (under a lock on $manifests)
  asr-kd prepare synth_rm --output-dir "$manifests" --hours "$hours" --seed "$seed" --nj "$nj" "${clean[@]}" \
    --log-file "$exp/log/prepare.log"
  asr-kd stats --manifest-dir "$manifests" --corpus synth_rm --lm-text "$manifests/synth_rm_lm_text.txt" \
    > "$exp/corpus_stats.json"
fi

# stages 1-3: features, lang, alignment (shared with the other recipes)
recipes/shared/data_stages.sh --stage "$stage" --stop-stage "$stop_stage" --corpus synth_rm --data "$data" \
  --lang "$lang" --exp "$exp" --nj "$nj" --max-skipped-share "$max_skipped_share" --align-opts "--splits train dev test"

# stages 4-7: teachers, cache, students, decoding and the report (shared with the other recipes)
recipes/shared/kd_stages.sh --stage "$stage" --stop-stage "$stop_stage" --exp "$exp" --lang "$lang" \
  --train-cuts "$ali/synth_rm_cuts_train.jsonl.gz" --valid-cuts "$ali/synth_rm_cuts_dev.jsonl.gz" \
  --test-cuts "$ali/synth_rm_cuts_test.jsonl.gz" --tune-cuts "$ali/synth_rm_cuts_dev.jsonl.gz" \
  --teachers "$teachers" --teacher-epochs "$teacher_epochs" --student "$student" --student-seeds "$student_seeds" \
  --fractions "$fractions" --sweep-temperatures "$sweep_temperatures" --sweep-seeds "$sweep_seeds" \
  --lm-text "$manifests/synth_rm_lm_text.txt" --transfer-cuts "$data/fbank/synth_rm_cuts_transfer.jsonl.gz" \
  --beam "$beam" --nj "$nj" --jobs "$jobs" --device "$device" --recipe-settings "name=synth_rm hours=$hours seed=$seed nj=$nj" \
  ${conf:+--conf "$conf"} "${extra_options[@]}"

log "Done (stages $stage..$stop_stage)."
