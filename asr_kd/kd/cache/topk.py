"""Top-k soft targets and the one rule that turns them back into full distributions.

Usage::

    from asr_kd.kd.cache import densify_topk, topk_posteriors
    ids, probs = topk_posteriors(soft_targets, k=16)     # (..., 16) int64 pdf ids, (..., 16) probabilities
    full = densify_topk(ids, probs, num_pdfs=87)         # (..., 87), rows sum to 1

The remaining-mass rule (used by the cache reader and by the sparse distillation loss alike):
the top-k probabilities are stored as they are (not renormalised), so the mass they leave out,
``r = max(0, 1 - sum(top-k))``, is known per frame. It is spread **uniformly over the other P - k pdfs**
(each gets ``r / (P - k)``), and the row is then divided by its sum. The division changes nothing when the
stored top-k sum to at most 1; it only absorbs fp16 rounding that pushes their sum above 1, and, with
k = P, it renormalises the row. So a reconstructed row is always a distribution, keeps the teacher's top-k
probabilities exactly, and keeps the total mass of the tail (which carries most of the "dark knowledge"
at high temperature) instead of dropping it.
"""

from __future__ import annotations

import torch

TINY = 1e-30  # guards the division of an all-zero (padding) row


def topk_posteriors(posteriors: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most probable pdfs of every frame, most probable first.

    Args:
        posteriors: ``(..., P)`` probabilities.
        k: 1 <= k <= P.

    Returns:
        ``ids (..., k)`` int64 pdf ids and ``probs (..., k)`` their probabilities (same dtype as input).
    """
    num_pdfs = posteriors.shape[-1]
    if not 1 <= k <= num_pdfs:
        raise ValueError(f"k must be in [1, num_pdfs={num_pdfs}], got {k}")
    probs, ids = torch.topk(posteriors, k, dim=-1, largest=True, sorted=True)
    return ids, probs


def densify_topk(ids: torch.Tensor, probs: torch.Tensor, num_pdfs: int) -> torch.Tensor:
    """Full ``(..., P)`` distributions from top-k ``ids (..., k)`` and ``probs (..., k)`` (module rule).

    The ids of one frame must be distinct and in ``[0, num_pdfs)``. Computed in float32 (float64 if
    ``probs`` is float64).
    """
    if ids.shape != probs.shape:
        raise ValueError(f"ids {tuple(ids.shape)} and probs {tuple(probs.shape)} must have the same shape")
    k = ids.shape[-1]
    if k > num_pdfs:
        raise ValueError(f"k={k} top-k entries cannot exceed num_pdfs={num_pdfs}")
    dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
    probs = probs.to(dtype)
    ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_pdfs):
        raise ValueError(f"pdf ids must lie in [0, {num_pdfs}), got [{int(ids.min())}, {int(ids.max())}]")
    top_mass = probs.sum(dim=-1, keepdim=True)
    if k < num_pdfs:
        fill = (1.0 - top_mass).clamp_min(0.0) / (num_pdfs - k)
    else:
        fill = torch.zeros_like(top_mass)
    dense = fill.expand(*probs.shape[:-1], num_pdfs).clone()
    dense.scatter_(-1, ids, probs)
    return dense / dense.sum(dim=-1, keepdim=True).clamp_min(TINY)
