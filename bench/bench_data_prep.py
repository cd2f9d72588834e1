"""Benchmark of stages 0-1: espeak-ng synthesis and fbank extraction speed, in x real time.

Usage:
    python bench/bench_data_prep.py --hours 1.0 --nj 1 2 --out exp/synth_digits/bench/data_prep.json

Synthesizes a fresh ``synth_digits`` corpus per job count (in a temporary directory), computes
features on it, and prints/writes seconds of audio per second of wall time for each stage and the
speed-up of ``nj`` jobs over one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from asr_kd.data.features import compute_fbank
from asr_kd.utils import setup_logging, write_json
from data_prep.synth_digits import prepare_synth_digits


def machine() -> dict:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def bench_once(hours: float, nj: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        manifests = prepare_synth_digits(tmp / "manifests", hours=hours, seed=seed, num_jobs=nj)
        t_synth = time.perf_counter() - t0
        audio_s = sum(r.duration for m in manifests.values() for r in m["recordings"])
        t0 = time.perf_counter()
        compute_fbank(tmp / "manifests", "synth_digits", tmp / "fbank", num_jobs=nj, device="cpu")
        t_feats = time.perf_counter() - t0
    return {
        "nj": nj,
        "audio_hours": round(audio_s / 3600, 4),
        "synthesis_seconds": round(t_synth, 2),
        "synthesis_x_real_time": round(audio_s / t_synth, 1),
        "features_seconds": round(t_feats, 2),
        "features_x_real_time": round(audio_s / t_feats, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--nj", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("exp/synth_digits/bench/data_prep.json"))
    args = parser.parse_args()
    setup_logging()
    runs = [bench_once(args.hours, nj, args.seed) for nj in args.nj]
    base = runs[0]
    for r in runs:
        r["synthesis_speedup"] = round(r["synthesis_x_real_time"] / base["synthesis_x_real_time"], 2)
        r["features_speedup"] = round(r["features_x_real_time"] / base["features_x_real_time"], 2)
    result = {"machine": machine(), "hours": args.hours, "runs": runs}
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
