#!/usr/bin/env bash
# What was run on the lent H100 (16 cores) for the distillation sweep: the synth_digits recipe's stages
# 0-4 on the GPU, then recipes/synth_digits/local/kd_sweep.sh. Figures go to $OUT (device tool) or ./gpu_out.
# Run from the repository root, after bench/gpu/fetch_wheels.sh, with the .whl folder beside it.
set -uo pipefail
. "$(dirname "$0")/setup.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
timeout ${RECIPE_TIMEOUT:-330} recipes/synth_digits/run.sh --nj 16 --device cuda --stop-stage 4 > "$OUT/recipe.log" 2>&1
echo "recipe stages 0-4: rc $? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/timing.txt"
t1=$(date +%s)
timeout ${SWEEP_TIMEOUT:-240} recipes/synth_digits/local/kd_sweep.sh --device cuda --parallel 4 --num-workers 3 \
  --runs "${RUNS:-hard:0:2:12:sa}" > "$OUT/sweep.log" 2>&1
echo "sweep: rc $? in $(( $(date +%s) - t1 )) s" | tee -a "$OUT/timing.txt"
cp exp/synth_digits/*.json exp/synth_digits/align/report.txt "$OUT/" 2>/dev/null
cp exp/synth_digits/sweep/students.json "$OUT/" 2>/dev/null
for f in exp/synth_digits/sweep/*.log exp/synth_digits/teacher-*/log/*; do
  echo "== $f"; grep -E "epoch|finished|Error|error" "$f" | tail -4; done > "$OUT/train_tails.txt" 2>&1
grep -E "Stage|took|done|Error" "$OUT/recipe.log" | tail -40
tail -30 "$OUT/sweep.log"
