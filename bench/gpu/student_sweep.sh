#!/usr/bin/env bash
# Third GPU sweep: the synth_digits recipe's stages 0-3, a teacher set trained without SpecAugment, then
# recipes/synth_digits/local/kd_sweep.sh for each student architecture (hard vs soft, T, alpha, 3% data).
set -uo pipefail
. "$(dirname "$0")/setup.sh"
t0=$(date +%s)
recipes/synth_digits/run.sh --nj 16 --device cuda --stop-stage 3 > "$OUT/recipe.log" 2>&1
echo "stages 0-3: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/timing.txt"
ali=data/ali; exp=exp/${NAME:-t}
TEACHERS=${TEACHERS:-"tdnn:teacher:1 tdnn:teacher:2 tdnn:teacher:3"}
t1=$(date +%s); i=0
for spec in $TEACHERS; do
  IFS=: read -r arch size seed <<< "$spec"
  asr-kd train --exp-dir "$exp/teacher-$i" --arch "$arch" --size "$size" --seed "$seed" \
    --train-cuts $ali/synth_digits_cuts_train.jsonl.gz --valid-cuts $ali/synth_digits_cuts_dev.jsonl.gz \
    --num-epochs "${TEACHER_EPOCHS:-12}" --max-duration 100 --lr 2e-3 --warmup-steps 40 --device cuda \
    --num-workers 3 --no-spec-augment > "$OUT/train-$i.log" 2>&1 &
  i=$((i + 1))
done
wait
echo "teachers: $(( $(date +%s) - t1 )) s" | tee -a "$OUT/timing.txt"
asr-kd evaluate --models $exp/teacher-*/best-valid-acc.pt --device cuda --json "$OUT/teachers.json" \
  --cuts $ali/synth_digits_cuts_dev.jsonl.gz $ali/synth_digits_cuts_test.jsonl.gz 2>/dev/null | tee "$OUT/teachers.txt"
run_student() {
  local student=$1 tag=sweep-${1%%:*}-$(echo "$1" | cut -d: -f2) t2=$(date +%s)
  timeout ${SWEEP_TIMEOUT:-200} recipes/synth_digits/local/kd_sweep.sh --exp "$exp" --tag "$tag" --device cuda \
    --parallel 8 --num-workers 2 --student "$student" --teachers "$TEACHERS" --runs "$RUNS" > "$OUT/$tag.log" 2>&1
  echo "$tag: rc $? in $(( $(date +%s) - t2 )) s" | tee -a "$OUT/timing.txt"
  cp "$exp/$tag/students.json" "$OUT/students-$tag.json" 2>/dev/null
}
for student in ${STUDENTS:-tdnn:student:7}; do  # concurrently: the GPU is far from busy with these models
  run_student "$student" &
done
wait
for f in "$OUT"/sweep-*.log; do echo "== $f"; grep -A30 "cuts_test.jsonl.gz:" "$f" | grep "%"; done
