"""Running trained models over cuts: teacher ensembles for the soft-target cache, and frame accuracy.

Usage::

    asr-kd cache --teachers exp/synth_digits/teacher-*/best.pt --cuts data/ali/synth_digits_cuts_train.jsonl.gz \\
        --cache-dir exp/synth_digits/cache-T2 --temperature 2 --storage topk --k 16
    asr-kd evaluate --models exp/synth_digits/teacher-*/best.pt --cuts data/ali/synth_digits_cuts_test.jsonl.gz
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from lhotse import CutSet
from tqdm import tqdm

from asr_kd.kd.cache import merge_soft_target_shards, write_soft_target_shards
from asr_kd.kd.cache_metadata import cache_metadata, prepare_cache_dir
from asr_kd.kd.ensemble import ensemble_posteriors
from asr_kd.models.checkpoint import load_model
from asr_kd.utils import resolve_device


def load_models(paths: Sequence[Path | str], device: torch.device) -> list[torch.nn.Module]:
    """Every checkpoint rebuilt in eval mode on ``device``."""
    if not paths:
        raise ValueError("no model checkpoints given")
    return [load_model(p, device=device)[0] for p in paths]


def _features(cuts: Sequence, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    feats = [torch.from_numpy(c.load_features()) for c in cuts]
    lengths = torch.tensor([f.shape[0] for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    return x.to(device), lengths.to(device)


@torch.no_grad()
def model_logits(models: Sequence[torch.nn.Module], cuts: Sequence, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of every model on a batch of cuts: ``(K, B, T, P)`` float32 and ``lengths (B,)``."""
    x, lengths = _features(cuts, device)
    return torch.stack([m(x, lengths).float() for m in models]), lengths


def ensemble_posteriors_fn(models, device, temperature: float, combination: str, weights):
    """A ``posteriors_fn`` for :func:`asr_kd.kd.cache.write_soft_target_shards`."""

    def fn(cuts: list) -> list[np.ndarray]:
        logits, lengths = model_logits(models, cuts, device)
        post = ensemble_posteriors(logits, temperature=temperature, mode=combination, weights=weights).cpu()
        return [post[i, : int(n)].numpy() for i, n in enumerate(lengths)]

    return fn


def build_cache(
    teachers: Sequence[Path | str],
    cuts_path: Path | str,
    cache_dir: Path | str,
    split: str = "train",
    temperature: float = 2.0,
    combination: str = "arithmetic",
    weights: Sequence[float] | None = None,
    storage: str = "topk",
    k: int = 16,
    num_shards: int = 8,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 16,
    device: str = "auto",
) -> Path | None:
    """Write the ensemble's soft targets for every cut of ``cuts_path``; see :mod:`asr_kd.kd.cache`.

    Resumable (complete shards are skipped), shardable over ``world_size`` ranks; the last call
    (rank 0 once every shard is complete) merges them into ``cuts_soft_<split>.jsonl.gz``.
    """
    dev = resolve_device(device)
    cuts = CutSet.from_file(cuts_path)
    models = load_models(teachers, dev)
    num_pdfs = _num_pdfs(models, cuts, dev)
    first = next(iter(cuts))
    feature_config = {"type": first.features.type, "num_features": first.num_features, "frame_shift": first.frame_shift,
                      "sampling_rate": first.sampling_rate}  # fmt: skip
    meta = cache_metadata(
        list(teachers), temperature, num_pdfs, combination, weights, storage, k if storage == "topk" else None,
        feature_config,
    )  # fmt: skip
    prepare_cache_dir(cache_dir, meta)
    start = time.perf_counter()
    frames = sum(c.num_frames for c in cuts)
    write_soft_target_shards(
        cuts, ensemble_posteriors_fn(models, dev, temperature, combination, weights), cache_dir, split,
        num_shards=num_shards, rank=rank, world_size=world_size, batch_size=batch_size,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    logging.info(f"soft targets of {len(cuts)} cuts ({frames} frames) in {seconds:.1f} s ({frames / seconds:.0f} frames/s)")
    if rank != 0:
        return None
    return merge_soft_target_shards(cache_dir, split, num_shards, cuts)


def _num_pdfs(models, cuts, device) -> int:
    logits, _ = model_logits(models, [next(iter(cuts))], device)
    return int(logits.shape[-1])


@torch.no_grad()
def frame_accuracies(
    model_paths: Sequence[Path | str], cuts_path: Path | str, device: str = "auto", batch_size: int = 32
) -> dict:
    """Frame accuracy of each model, their mean, and of their ensemble (arithmetic mean, T = 1).

    Frame accuracy: the share of frames whose arg-max posterior equals the ``frame_labels``.
    """
    dev = resolve_device(device)
    models = load_models(model_paths, dev)
    cuts = list(CutSet.from_file(cuts_path))
    correct = np.zeros(len(models) + 1, dtype=np.int64)
    total = 0
    for b in tqdm(range(0, len(cuts), batch_size), desc=f"frame accuracy {Path(cuts_path).name}", unit="batch"):
        batch = cuts[b : b + batch_size]
        logits, lengths = model_logits(models, batch, dev)
        labels = torch.nn.utils.rnn.pad_sequence(
            [torch.from_numpy(c.load_frame_labels().astype(np.int64)) for c in batch], batch_first=True,
            padding_value=-100,
        ).to(dev)  # fmt: skip
        valid = labels >= 0
        ensemble = ensemble_posteriors(logits, temperature=1.0, mode="arithmetic")
        for i, scores in enumerate([*logits, ensemble]):
            correct[i] += int(((scores.argmax(-1) == labels) & valid).sum())
        total += int(valid.sum())
    per_model = {str(p): correct[i] / max(total, 1) for i, p in enumerate(model_paths)}
    result = {
        "cuts": str(cuts_path),
        "num_frames": total,
        "models": per_model,
        "mean_model": float(np.mean(list(per_model.values()))),
        "ensemble": correct[-1] / max(total, 1) if len(models) > 1 else None,
    }
    logging.debug(json.dumps(result, indent=2))
    return result
