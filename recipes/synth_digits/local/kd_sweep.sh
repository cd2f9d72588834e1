#!/usr/bin/env bash
# Distillation hyper-parameter sweep over an existing recipe run (stages 0-4 done): soft-target caches at
# several temperatures, then students trained in parallel, then their frame accuracy on dev and test.
#
#   recipes/synth_digits/local/kd_sweep.sh --exp exp/synth_digits --device cuda --parallel 4 \
#       --runs "hard:0:2:12:sa dense:0.9:2:12:sa topk:0.5:2:12:sa"
#
# Each run is storage:alpha:T:epochs:aug[:fraction] (storage hard, dense or topk (k=16); aug sa or nosa;
# fraction of the training cuts, default 1). Students go to $exp/$tag/<run>, results to
# $exp/$tag/students.json.
set -euo pipefail
exp=exp/synth_digits
data=data
device=auto
parallel=2
num_workers=2
student="dnn:student:7"
max_duration=100
runs="hard:0:2:12:sa dense:0.5:2:12:sa dense:0.9:2:12:sa"
teachers="dnn:teacher:1 tdnn:teacher:2 dnn:teacher:3"
tag=sweep
. "$(dirname "$0")/../../shared/parse_options.sh"
. "$(dirname "$0")/../../shared/log.sh"
cd "$(dirname "$0")/../../.."
ali=$data/ali
ckpts=(); i=0; for _ in $teachers; do ckpts+=("$exp/teacher-$i/best-valid-acc.pt"); i=$((i + 1)); done
IFS=: read -r arch size seed <<< "$student"
mkdir -p "$exp/$tag"

for spec in $runs; do  # the caches the runs need
  IFS=: read -r storage alpha T epochs aug _ <<< "$spec"
  [ "$storage" = hard ] && continue
  cache=$exp/$tag/cache-$storage-T$T
  [ -f "$cache/.done" ] && continue
  opts=(--storage dense); [ "$storage" = topk ] && opts=(--storage topk --k 16)
  log "cache $cache"
  asr-kd cache --teachers "${ckpts[@]}" --cuts "$ali/synth_digits_cuts_train.jsonl.gz" --cache-dir "$cache" \
    --temperature "$T" "${opts[@]}" --device "$device" --batch-size 64
  touch "$cache/.done"
done

train_one() {
  local spec=$1 storage alpha T epochs aug frac
  IFS=: read -r storage alpha T epochs aug frac <<< "$spec"
  local name=${spec//:/-} extra=(--train-fraction "${frac:-1}")
  [ "$aug" = nosa ] && extra+=(--no-spec-augment)
  [ "$storage" != hard ] && extra+=(--cache-dir "$exp/$tag/cache-$storage-T$T")
  asr-kd distill --exp-dir "$exp/$tag/$name" --arch "$arch" --size "$size" --seed "$seed" --alpha "$alpha" \
    --temperature "$T" --lang-dir "$data/lang" --train-cuts "$ali/synth_digits_cuts_train.jsonl.gz" \
    --valid-cuts "$ali/synth_digits_cuts_dev.jsonl.gz" --num-epochs "$epochs" --max-duration "$max_duration" \
    --lr 2e-3 --warmup-steps 40 --device "$device" --num-workers "$num_workers" "${extra[@]}" \
    > "$exp/$tag/$name.log" 2>&1 || echo "FAILED $name"
}
running=0
for spec in $runs; do
  log "student $spec"
  train_one "$spec" &
  running=$((running + 1))
  if [ $running -ge "$parallel" ]; then wait -n; running=$((running - 1)); fi
done
wait
models=(); for spec in $runs; do models+=("$exp/$tag/${spec//:/-}/best-valid-acc.pt"); done
asr-kd evaluate --models "${models[@]}" --device "$device" --json "$exp/$tag/students.json" \
  --cuts "$ali/synth_digits_cuts_dev.jsonl.gz" "$ali/synth_digits_cuts_test.jsonl.gz"
