#!/usr/bin/env bash
# GPU checks: training throughput of every architecture in fp32 and bf16 (bench/bench_train.py), and the
# batched CUDA fbank path against the per-cut CPU path on a small synth_digits corpus. Figures under $OUT.
set -uo pipefail
. "$(dirname "$0")/setup.sh"
for prec in fp32 bf16; do
  flag=(); [ $prec = bf16 ] && flag=(--bf16)
  timeout 120 python3 bench/bench_train.py --device cuda "${flag[@]}" --sizes student teacher student-xl teacher-xl \
    --batch 64 --frames 500 --steps 10 --out "$OUT/train_$prec.json" 2>&1 | grep -v Warning | tail -12
done
python3 -m asr_kd.cli prepare synth_digits --output-dir /tmp/m --hours 0.1 --nj 16 > "$OUT/prepare.log" 2>&1
python3 - <<'PY' 2>&1 | grep -v "it/s\|cut/s" | tail -8
import numpy as np
from lhotse import CutSet
from asr_kd.data.features import compute_fbank
if __name__ == "__main__":
    s_cpu = compute_fbank("/tmp/m", "synth_digits", "/tmp/fb_cpu", splits=["test"], device="cpu", num_jobs=8)
    s_gpu = compute_fbank("/tmp/m", "synth_digits", "/tmp/fb_gpu", splits=["test"], device="cuda", num_jobs=8)
    a = {c.id: c for c in CutSet.from_file("/tmp/fb_cpu/synth_digits_cuts_test.jsonl.gz")}
    b = CutSet.from_file("/tmp/fb_gpu/synth_digits_cuts_test.jsonl.gz")
    diffs, n = [], 0
    for c in b:
        x, y = a[c.id].load_features(), c.load_features()
        assert x.shape == y.shape, (c.id, x.shape, y.shape)
        diffs.append(np.abs(x - y).max()); n += 1
    print(f"fbank cuda vs cpu: {n} cuts, same shapes, max |diff| {max(diffs):.4f}, mean of per-cut max {np.mean(diffs):.4f}")
    print("cpu", s_cpu["test"]["x_real_time"], "x real time; cuda", s_gpu["test"]["x_real_time"])
PY
