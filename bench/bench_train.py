"""Benchmark of training throughput (frames/s) of every architecture and size on this machine.

Usage:
    python bench/bench_train.py --sizes student teacher --out exp/synth_digits/bench/train.json
    python bench/bench_train.py --device cuda --bf16 --sizes teacher-xl --batch 64 --frames 500

Times forward + backward + AdamW step on random batches of ``--batch`` utterances of ``--frames``
frames (the cost does not depend on the values), after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from asr_kd.models import ModelConfig, build_model, count_parameters
from asr_kd.utils import write_json


def bench(arch: str, size: str, args, device: torch.device) -> dict:
    model = build_model(ModelConfig(arch=arch, size=size, num_pdfs=args.num_pdfs)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, args.frames, 80, device=device)
    lengths = torch.full((args.batch,), args.frames, device=device)
    y = torch.randint(0, args.num_pdfs, (args.batch, args.frames), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(x, lengths)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, args.num_pdfs), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"arch": arch, "size": size, "params": count_parameters(model),
            "frames_per_s": round(args.steps * args.batch * args.frames / seconds)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["dnn", "tdnn", "conformer", "blstm"])
    parser.add_argument("--sizes", nargs="+", default=["student", "teacher"])
    parser.add_argument("--num-pdfs", type=int, default=87)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("exp/synth_digits/bench/train.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    runs = [bench(a, s, args, device) for a in args.archs for s in args.sizes]
    result = {
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "bf16": args.bf16},
        "batch": args.batch, "frames": args.frames, "runs": runs,
    }  # fmt: skip
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
