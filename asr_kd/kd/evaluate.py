"""Frame accuracy of models, of their mean and of their ensemble on labelled cuts (``asr-kd evaluate``).

Usage::

    asr-kd evaluate --models exp/my_recipe/teacher-*/best-valid-acc.pt --cuts data/ali/my_corpus_cuts_test.jsonl.gz

    from asr_kd.kd.evaluate import frame_accuracies
    result = frame_accuracies(checkpoints, "data/ali/my_corpus_cuts_test.jsonl.gz")
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from lhotse import CutSet
from tqdm import tqdm

from asr_kd.batch import FrameAccuracy, collate_frames, model_logits
from asr_kd.kd.ensemble import ensemble_posteriors
from asr_kd.models.checkpoint import load_models
from asr_kd.utils import resolve_device


@torch.no_grad()
def frame_accuracies(
    model_paths: Sequence[Path | str], cuts_path: Path | str, device: str = "auto", batch_size: int = 32
) -> dict:
    """Frame accuracy of each model, their mean, and of their ensemble (arithmetic mean, T = 1).

    Frame accuracy (docs/design.md): the share of labelled frames whose arg-max posterior equals the
    ``frame_labels``. Returns ``{"cuts", "num_frames", "models": {path: accuracy}, "mean_model",
    "ensemble", "num_skipped", "skipped"}`` (``ensemble`` None for a single model; ``skipped``: cut id ->
    reason of the cuts left out for their non-finite features, which are not scored).
    """
    dev = resolve_device(device)
    models = load_models(model_paths, dev)
    cuts = list(CutSet.from_file(cuts_path))
    accuracies = [FrameAccuracy() for _ in range(len(models) + 1)]
    skipped: dict[str, str] = {}
    for b in tqdm(range(0, len(cuts), batch_size), desc=f"frame accuracy {Path(cuts_path).name}", unit="batch"):
        batch, left_out = collate_frames(cuts[b : b + batch_size], labels="required", skip_nonfinite=True)
        for cut_id, reason in left_out.items():
            logging.warning(f"cut {cut_id} skipped: {reason}")
        skipped.update(left_out)
        if batch is None:
            continue
        logits = model_logits(models, batch, dev)
        ensemble = ensemble_posteriors(logits, temperature=1.0, mode="arithmetic")
        for accuracy, scores in zip(accuracies, [*logits, ensemble], strict=True):
            accuracy.update(scores, batch["frame_labels"])
    per_model = {str(p): accuracies[i].value or 0.0 for i, p in enumerate(model_paths)}
    result = {
        "cuts": str(cuts_path),
        "num_frames": accuracies[0].frames,
        "models": per_model,
        "mean_model": float(np.mean(list(per_model.values()))),
        "ensemble": (accuracies[-1].value or 0.0) if len(models) > 1 else None,
        "num_skipped": len(skipped),
        "skipped": dict(sorted(skipped.items())),
    }
    if skipped:
        logging.warning(f"{Path(cuts_path).name}: {len(skipped)} of {len(cuts)} cuts skipped (non-finite features)")
    logging.debug(json.dumps(result, indent=2))
    return result
