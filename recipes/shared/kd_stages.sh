#!/usr/bin/env bash
# Stages 4-7 shared by the recipes: teachers, the soft-target cache, the students, decoding and the report.
# Sourced by recipes/<corpus>/run.sh after its own stages 0-3, from the repository root, with these set:
#   stage stop_stage nj device exp lang          the usual recipe variables
#   train_cuts valid_cuts test_cuts              aligned cuts (frame_labels) of the three roles
#   tune_cuts                                    dev cuts for the acoustic scale ("" if there are none)
#   teachers teacher_epochs spec_augment max_duration num_workers lr warmup_steps
#   temperature k student student_epochs alpha small_fraction small_epochs small_alpha
#   sweep_temperatures lm_order acoustic_scale ("tune" needs tune_cuts)   (see recipes/synth_digits/run.sh)
#   recipe_config                                JSON object of the recipe's own settings, for results.json
#
# Outputs under $exp: teacher-<i>/, cache-T<T>/, teachers.json, student-{hard,kd}/, student-{hard,kd}-small/,
# student-kd-T<T>/, students.json, decode/ (recogs-*, errs-*, wer-summary-*, result-*.json), results.json,
# RESULTS.md, temperature_sweep.png.

augment=(); [ "$spec_augment" = true ] || augment=(--no-spec-augment)
eval_cuts=("$valid_cuts"); [ "$test_cuts" = "$valid_cuts" ] || eval_cuts+=("$test_cuts")  # frame accuracy

teacher_ckpts() {  # the best checkpoint of each teacher of $teachers
  local i=0 spec
  for spec in $teachers; do echo "$exp/teacher-$i/best-valid-acc.pt"; i=$((i + 1)); done
}

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  i=0
  for spec in $teachers; do
    IFS=: read -r m_arch m_size m_seed <<< "$spec"
    log "Stage 4: teacher-$i ($m_arch, $m_size, seed $m_seed)"
    # resumes an interrupted run; returns at once when exp/.../done exists
    asr-kd train --exp-dir "$exp/teacher-$i" --arch "$m_arch" --size "$m_size" --seed "$m_seed" \
      --lang-dir "$lang" --train-cuts "$train_cuts" --valid-cuts "$valid_cuts" --num-epochs "$teacher_epochs" \
      --max-duration "$max_duration" --lr "$lr" --warmup-steps "$warmup_steps" --device "$device" \
      --num-workers "$num_workers" "${augment[@]}"
    i=$((i + 1))
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  for t in $temperature $sweep_temperatures; do
    cache=$exp/cache-T$t
    [ -f "$cache/.done" ] && continue
    log "Stage 5: cache the ensemble's soft targets (T=$t, k=$k) -> $cache"
    storage=(--storage topk --k "$k"); [ "$k" -eq 0 ] && storage=(--storage dense)
    # shellcheck disable=SC2046
    asr-kd cache --teachers $(teacher_ckpts) --cuts "$train_cuts" --cache-dir "$cache" --temperature "$t" \
      "${storage[@]}" --device "$device" --log-file "$exp/log/cache.log"
    touch "$cache/.done"
  done
  log "Stage 5: frame accuracy of the teachers, their mean and the ensemble"
  # shellcheck disable=SC2046
  asr-kd evaluate --models $(teacher_ckpts) --device "$device" --json "$exp/teachers.json" \
    --cuts "${eval_cuts[@]}"
fi

# distill NAME ALPHA T EPOCHS FRACTION: one student of $student (alpha 0: hard labels only)
distill() {
  local name=$1 a=$2 t=$3 epochs=$4 fraction=$5 arch size seed
  IFS=: read -r arch size seed <<< "$student"
  log "Stage 6: $name ($arch, $size, seed $seed, alpha $a, T $t, $fraction of the data, $epochs epochs)"
  # shellcheck disable=SC2046
  asr-kd distill --exp-dir "$exp/$name" --arch "$arch" --size "$size" --seed "$seed" \
    --alpha "$a" --temperature "$t" --cache-dir "$exp/cache-T$t" --train-fraction "$fraction" \
    --teachers $(teacher_ckpts) --lang-dir "$lang" --train-cuts "$train_cuts" --valid-cuts "$valid_cuts" \
    --num-epochs "$epochs" --max-duration "$max_duration" --lr "$lr" --warmup-steps "$warmup_steps" \
    --device "$device" --num-workers "$num_workers" "${augment[@]}"
}

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  distill student-hard 0 "$temperature" "$student_epochs" 1
  distill student-kd "$alpha" "$temperature" "$student_epochs" 1
  distill student-hard-small 0 "$temperature" "$small_epochs" "$small_fraction"
  distill student-kd-small "$small_alpha" "$temperature" "$small_epochs" "$small_fraction"
  for t in $sweep_temperatures; do
    distill "student-kd-T$t" "$alpha" "$t" "$student_epochs" 1
  done
  asr-kd evaluate --models "$exp/student-hard/best-valid-acc.pt" "$exp/student-kd/best-valid-acc.pt" \
    --device "$device" --json "$exp/students.json" --cuts "${eval_cuts[@]}"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  if [ "$acoustic_scale" = tune ]; then
    [ -n "$tune_cuts" ] || { echo "acoustic_scale=tune needs tune_cuts (dev cuts)" >&2; exit 1; }
    scale=(--tune-cuts "$tune_cuts")
  else
    scale=(--acoustic-scale "$acoustic_scale")
  fi
  # decode NAME ROLE CHECKPOINT...: WER and frame accuracy on $test_cuts -> $exp/decode/
  decode() {
    local name=$1 role=$2; shift 2
    asr-kd decode --models "$@" --name "$name" --role "$role" --cuts "$test_cuts" --lang-dir "$lang" \
      --pdf-counts "$exp/align/pdf_counts.txt" --lm-cuts "$train_cuts" --lm-order "$lm_order" "${scale[@]}" \
      --output-dir "$exp/decode" --nj "$nj" --device "$device" --log-file "$exp/log/decode.log"
  }
  log "Stage 7: decode every model on $test_cuts"
  i=0
  for _ in $teachers; do decode "teacher-$i" teacher "$exp/teacher-$i/best-valid-acc.pt"; i=$((i + 1)); done
  # shellcheck disable=SC2046
  decode ensemble ensemble $(teacher_ckpts)
  decode student-hard student_hard "$exp/student-hard/best-valid-acc.pt"
  decode student-kd student_kd "$exp/student-kd/best-valid-acc.pt"
  decode student-hard-small student_hard_3pct "$exp/student-hard-small/best-valid-acc.pt"
  decode student-kd-small student_kd_3pct "$exp/student-kd-small/best-valid-acc.pt"
  for t in $sweep_temperatures; do
    decode "student-kd-T$t" student_kd_sweep "$exp/student-kd-T$t/best-valid-acc.pt"
  done
  log "Stage 7: the results table -> $exp/results.json, $exp/RESULTS.md"
  cat > "$exp/recipe_config.json.tmp" <<JSON
{"recipe": $recipe_config, "teachers": "$teachers", "teacher_epochs": $teacher_epochs,
 "spec_augment": $spec_augment, "max_duration": $max_duration, "lr": $lr, "warmup_steps": $warmup_steps,
 "temperature": $temperature, "k": $k, "student": "$student", "student_epochs": $student_epochs,
 "alpha": $alpha, "small_fraction": $small_fraction, "small_epochs": $small_epochs,
 "small_alpha": $small_alpha, "sweep_temperatures": "$sweep_temperatures", "lm_order": $lm_order,
 "acoustic_scale": "$acoustic_scale", "num_workers": $num_workers, "test_cuts": "$test_cuts",
 "tune_cuts": "$tune_cuts"}
JSON
  mv "$exp/recipe_config.json.tmp" "$exp/recipe_config.json"
  asr-kd report "$exp"
fi
