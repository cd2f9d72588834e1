"""Benchmark of the soft-target cache: write/read throughput and bytes per frame.

Usage:
    python bench/bench_cache.py --cuts data/ali/synth_digits_cuts_train.jsonl.gz --teachers 3 \\
        --out exp/synth_digits/bench/cache.json

For each storage (top-k with k = 1, 4, 16, and dense fp16) it writes the soft targets of the given
cuts (random Dirichlet posteriors over the lang's pdfs: the teacher forward pass is not measured
here), reads them all back through the lhotse manifest, and reports frames/s both ways and the bytes
per frame on disk, against a dense fp32 store of every teacher's posteriors (the layout of
SpeechBrain's distillation recipe: K x P x 4 bytes per frame).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from lhotse import CutSet

from asr_kd.data.lang import Lang
from asr_kd.kd.cache import (
    bytes_per_frame,
    cache_metadata,
    merge_soft_target_shards,
    prepare_cache_dir,
    soft_targets_of,
    write_soft_target_shards,
)
from asr_kd.utils import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=Path, default=Path("data/ali/synth_digits_cuts_train.jsonl.gz"))
    parser.add_argument("--lang-dir", type=Path, default=Path("data/lang"), help="gives the number of pdfs")
    parser.add_argument("--teachers", type=int, default=3, help="K of the fp32 per-teacher baseline")
    parser.add_argument("--out", type=Path, default=Path("exp/synth_digits/bench/cache.json"))
    args = parser.parse_args()
    cuts = list(CutSet.from_file(args.cuts))
    num_pdfs = Lang.load(args.lang_dir).num_pdfs
    frames = sum(c.num_frames for c in cuts)
    rng = np.random.default_rng(0)
    posteriors = {c.id: rng.dirichlet(np.full(num_pdfs, 0.1), size=c.num_frames).astype(np.float32) for c in cuts}
    fake_teacher = {"path": "random-dirichlet", "sha256": "0" * 64}
    runs = []
    for storage, k in [("topk", 1), ("topk", 4), ("topk", 16), ("dense", None)]:
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            prepare_cache_dir(cache, cache_metadata([fake_teacher], 2.0, num_pdfs, storage=storage, k=k))
            start = time.perf_counter()
            write_soft_target_shards(cuts, lambda batch: [posteriors[c.id] for c in batch], cache, "train", num_shards=4)
            manifest = merge_soft_target_shards(cache, "train", 4)
            write_s = time.perf_counter() - start
            disk = sum(p.stat().st_size for p in (cache / "shards").glob("*.h5"))
            start = time.perf_counter()
            for cut in CutSet.from_file(manifest):
                soft_targets_of(cut)
            read_s = time.perf_counter() - start
        runs.append({
            "storage": storage if storage == "dense" else f"top-{k}",
            "bytes_per_frame_formula": bytes_per_frame(storage, k, num_pdfs),
            "bytes_per_frame_on_disk": round(disk / frames, 1),
            "write_frames_per_s": round(frames / write_s),
            "read_frames_per_s": round(frames / read_s),
        })  # fmt: skip
    baseline = args.teachers * num_pdfs * 4
    for r in runs:
        r["fraction_of_fp32_per_teacher_store"] = round(r["bytes_per_frame_on_disk"] / baseline, 4)
    result = {"cuts": str(args.cuts), "num_cuts": len(cuts), "frames": frames, "num_pdfs": num_pdfs,
              "fp32_per_teacher_bytes_per_frame": baseline, "teachers_in_baseline": args.teachers, "runs": runs}
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
