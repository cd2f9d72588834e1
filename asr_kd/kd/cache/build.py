"""The cache stage: run the teacher ensemble over cuts and write its soft targets (``asr-kd cache``).

Usage::

    asr-kd cache --teachers exp/my_recipe/teacher-*/best-valid-acc.pt --cuts data/ali/my_corpus_cuts_train.jsonl.gz \\
        --cache-dir exp/my_recipe/cache-T2 --temperature 2 --storage topk --k 16

    from asr_kd.kd.cache import build_cache
    build_cache(teacher_paths, cuts_path, cache_dir, temperature=2.0, storage="dense")
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from lhotse import CutSet

from asr_kd.batch import collate_frames, model_logits
from asr_kd.guard import DEFAULT_MAX_SKIPPED_SHARE, stage_lock
from asr_kd.kd.cache.metadata import cache_metadata, prepare_cache_dir
from asr_kd.kd.cache.writer import merge_soft_target_shards, write_soft_target_shards
from asr_kd.kd.ensemble import ensemble_posteriors
from asr_kd.models.checkpoint import load_models
from asr_kd.utils import resolve_device


def ensemble_posteriors_fn(models, device, temperature: float, combination: str, weights):
    """A ``posteriors_fn`` for :func:`asr_kd.kd.cache.write_soft_target_shards`: cuts -> ``(T_i, P)`` arrays."""

    def fn(cuts: list) -> list[np.ndarray | str]:
        batch, skipped = collate_frames(cuts, labels="none", skip_nonfinite=True)
        out: dict[str, np.ndarray | str] = dict(skipped)  # a left-out cut (non-finite features): its reason
        if batch is not None:
            logits = model_logits(models, batch, device)
            post = ensemble_posteriors(logits, temperature=temperature, mode=combination, weights=weights).cpu()
            for i, (cut_id, n) in enumerate(zip(batch["cut_ids"], batch["lengths"].tolist())):
                out[cut_id] = post[i, :n].numpy()
        return [out[c.id] for c in cuts]

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
    max_skipped_share: float = DEFAULT_MAX_SKIPPED_SHARE,
) -> Path | None:
    """Write the ensemble's soft targets for every cut of ``cuts_path``; see :mod:`asr_kd.kd.cache`.

    Resumable (complete shards are skipped), shardable over ``world_size`` ranks; the last call
    (rank 0 once every shard is complete) merges them into ``cuts_soft_<split>.jsonl.gz``. A cut with
    non-finite features is left out, named in the log and in ``metadata.json`` (``skipped_cut_ids``); the
    merge fails (``TooManySkippedError``) when more than ``max_skipped_share`` of the cuts were left out.
    Holds ``stage_lock(cache_dir, "cache-<split>-rank<rank>")``: a concurrent run of the same rank on the
    same cache is refused (``StageError``); a full disk raises ``OutputIOError`` and a rerun resumes.
    """
    with stage_lock(cache_dir, f"cache-{split}-rank{rank}"):  # a second run of this rank is refused
        return _build_cache(teachers, cuts_path, cache_dir, split, temperature, combination, weights, storage, k,
                            num_shards, rank, world_size, batch_size, device, max_skipped_share)  # fmt: skip


def _build_cache(teachers, cuts_path, cache_dir, split, temperature, combination, weights, storage, k, num_shards,
                 rank, world_size, batch_size, device, max_skipped_share) -> Path | None:  # fmt: skip
    dev = resolve_device(device)
    cuts = CutSet.from_file(cuts_path)
    models = load_models(teachers, dev)
    first = next(iter(cuts))
    num_pdfs = int(model_logits(models, collate_frames([first], labels="none")[0], dev).shape[-1])
    feature_config = {"type": first.features.type, "num_features": first.num_features, "frame_shift": first.frame_shift,
                      "sampling_rate": first.sampling_rate}  # fmt: skip
    meta = cache_metadata(
        list(teachers), temperature, num_pdfs, combination, weights, storage, k if storage == "topk" else None,
        feature_config,
    )  # fmt: skip
    prepare_cache_dir(cache_dir, meta)
    start = time.perf_counter()
    frames = sum(c.num_frames for c in cuts)
    with torch.no_grad():
        write_soft_target_shards(
            cuts, ensemble_posteriors_fn(models, dev, temperature, combination, weights), cache_dir, split,
            num_shards=num_shards, rank=rank, world_size=world_size, batch_size=batch_size,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    logging.info(f"soft targets of {len(cuts)} cuts ({frames} frames) in {seconds:.1f} s ({frames / seconds:.0f} frames/s)")
    if rank != 0:
        return None
    return merge_soft_target_shards(cache_dir, split, num_shards, cuts, cuts_path=cuts_path,
                                    max_skipped_share=max_skipped_share)
