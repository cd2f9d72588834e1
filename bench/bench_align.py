"""Benchmark of the align stage: speed as x real time (audio seconds per wall-clock second) per phase.

Usage:
    OMP_NUM_THREADS=1 python bench/bench_align.py --cuts-dir data/fbank --corpus synth_rm \\
        --lang-dir data/lang_synth_rm --work-dir /tmp/bench_align --nj 2 [--passes tri1 tri2] \\
        [--align-args "--num-leaves 1000 1000"]

Runs ``asr-kd align`` from scratch into ``--work-dir`` (the GMM ladder on the train split, every split
aligned), with ``torch`` on ``--threads`` threads and ``--nj`` Viterbi processes (the target machine has
2 cores), then prints the seconds of every phase from the stage's ``timing.json``, the training audio
and the aligned audio, and the whole stage's speed: (training audio + aligned audio) / wall time; the
target is >= 40x on 2 cores. The figures go to ``<work-dir>/bench_align.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts-dir", type=Path, required=True, help="stage 1's cuts")
    parser.add_argument("--corpus", required=True, help="manifest prefix, e.g. synth_rm")
    parser.add_argument("--lang-dir", type=Path, required=True, help="stage 2's lang directory")
    parser.add_argument("--work-dir", type=Path, required=True, help="scratch directory (deleted first)")
    parser.add_argument("--nj", type=int, default=2, help="Viterbi processes (default: 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--passes", nargs="*", default=["tri1", "tri2"], help="triphone passes (default: tri1 tri2)")
    parser.add_argument("--align-args", default="", help="more flags of `asr-kd align` (default: none)")
    args = parser.parse_args()

    shutil.rmtree(args.work_dir, ignore_errors=True)
    exp = args.work_dir / "align"
    cmd = [sys.executable, "-m", "asr_kd.cli", "align", "--cuts-dir", str(args.cuts_dir), "--corpus", args.corpus,
           "--lang-dir", str(args.lang_dir), "--output-dir", str(args.work_dir / "ali"), "--exp-dir", str(exp),
           "--nj", str(args.nj), "--device", "cpu", "--passes", *args.passes, *shlex.split(args.align_args)]
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    timing = json.loads((exp / "timing.json").read_text())
    audio = timing.get("train_audio", 0.0) + sum(v for k, v in timing.items() if k.startswith("audio_"))
    aligned = sum(v for k, v in timing.items() if k.startswith("audio_"))
    result = {"command": shlex.join(cmd), "wall_s": wall, "timing_s": timing, "aligned_audio_s": aligned,
              "x_real_time": audio / wall, "final_alignment_x_real_time":
              aligned / max(sum(v for k, v in timing.items() if k.startswith("align_")), 1e-9)}
    report = json.loads((exp / "report.json").read_text()) if (exp / "report.json").is_file() else {}
    result["passes"] = report.get("passes", {})
    (args.work_dir / "bench_align.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'phase':<16}{'seconds':>10}")
    for key, value in timing.items():
        if not key.startswith("audio_") and key != "train_audio":
            print(f"{key:<16}{value:>10.1f}")
    print(f"training audio {timing.get('train_audio', 0.0):.0f} s, aligned audio {aligned:.0f} s, wall {wall:.1f} s")
    print(f"align stage: {result['x_real_time']:.1f}x real time (target >= 40x); final alignment alone "
          f"{result['final_alignment_x_real_time']:.1f}x")
    for name, splits in result["passes"].items():
        for split, r in splits.items():
            print(f"{name:<6}{split:<6} frames {100 * r['frame_agreement']:.2f}%  <=20 ms "
                  f"{100 * r['boundary_within_20ms']:.2f}%")


if __name__ == "__main__":
    main()
