#!/usr/bin/env bash
# Second GPU sweep: how well-trained must the teachers be for distillation to pay? The synth_digits
# recipe's stages 0-3, then teacher sets trained with different epochs / SpecAugment, each set's
# ensemble evaluated, then recipes/synth_digits/local/kd_sweep.sh on each set. Results under $OUT.
set -uo pipefail
. "$(dirname "$0")/setup.sh"
t0=$(date +%s)
recipes/synth_digits/run.sh --nj 16 --device cuda --stop-stage 3 > "$OUT/recipe.log" 2>&1
echo "stages 0-3: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/timing.txt"
ali=data/ali
SETS=${SETS:-"e12nosa:12:nosa e24nosa:24:nosa"}
t1=$(date +%s)
for set in $SETS; do
  IFS=: read -r name epochs aug <<< "$set"
  i=0
  for spec in dnn:teacher:1 tdnn:teacher:2 dnn:teacher:3; do
    IFS=: read -r arch size seed <<< "$spec"
    extra=(); [ "$aug" = nosa ] && extra=(--no-spec-augment)
    asr-kd train --exp-dir "exp/$name/teacher-$i" --arch "$arch" --size "$size" --seed "$seed" \
      --train-cuts $ali/synth_digits_cuts_train.jsonl.gz --valid-cuts $ali/synth_digits_cuts_dev.jsonl.gz \
      --num-epochs "$epochs" --max-duration 100 --lr 2e-3 --warmup-steps 40 --device cuda --num-workers 2 \
      "${extra[@]}" > "$OUT/train-$name-$i.log" 2>&1 &
    i=$((i + 1))
  done
done
wait
echo "teachers: $(( $(date +%s) - t1 )) s" | tee -a "$OUT/timing.txt"
for set in $SETS; do
  IFS=: read -r name epochs aug <<< "$set"
  asr-kd evaluate --models exp/$name/teacher-{0,1,2}/best-valid-acc.pt --device cuda --json "$OUT/teachers-$name.json" \
    --cuts $ali/synth_digits_cuts_dev.jsonl.gz $ali/synth_digits_cuts_test.jsonl.gz 2>/dev/null | tee "$OUT/teachers-$name.txt"
done
for set in $SETS; do
  IFS=: read -r name epochs aug <<< "$set"
  t2=$(date +%s)
  timeout ${SWEEP_TIMEOUT:-200} recipes/synth_digits/local/kd_sweep.sh --exp "exp/$name" --device cuda --parallel 6 \
    --num-workers 2 --runs "${RUNS:-hard:0:2:12:nosa}" > "$OUT/sweep-$name.log" 2>&1
  echo "sweep $name: rc $? in $(( $(date +%s) - t2 )) s" | tee -a "$OUT/timing.txt"
  cp "exp/$name/sweep/students.json" "$OUT/students-$name.json" 2>/dev/null
  tail -32 "$OUT/sweep-$name.log"
done
