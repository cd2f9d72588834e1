"""Ensemble posteriors: temperature-softened teacher posteriors combined into one distribution per frame.

Usage::

    from asr_kd.kd.ensemble import ensemble_posteriors
    logits = torch.stack([teacher(feats) for teacher in teachers])   # (K, B, T, P)
    soft_targets = ensemble_posteriors(logits, temperature=2.0)       # (B, T, P), rows sum to 1

Definitions (docs/design.md), with ``z_k`` the logits of teacher ``k`` and ``w`` the weights (uniform by default):

- arithmetic (default, as in Hinton et al. 2015): ``p = sum_k w_k softmax(z_k / T)``
- geometric: ``p ∝ exp(sum_k w_k log_softmax(z_k / T))``, renormalised over the P pdfs.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

COMBINATION_MODES = ("arithmetic", "geometric")
WEIGHTS_TOLERANCE = 1e-5  # |sum(weights) - 1| allowed


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float, or ValueError when it is not a finite number > 0."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def validate_weights(weights: Sequence[float] | torch.Tensor | None, num_teachers: int) -> torch.Tensor:
    """The ensemble weights as a float64 ``(K,)`` tensor: uniform when ``weights`` is None.

    Raises ValueError unless there is one finite, non-negative weight per teacher and they sum to 1
    (within ``WEIGHTS_TOLERANCE``).
    """
    if num_teachers < 1:
        raise ValueError(f"an ensemble needs at least 1 teacher, got {num_teachers}")
    if weights is None:
        return torch.full((num_teachers,), 1.0 / num_teachers, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().flatten()
    listed = [round(float(x), 6) for x in w]
    if w.numel() != num_teachers:
        raise ValueError(f"weights must have one entry per teacher (K={num_teachers}), got {w.numel()}: {listed}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and non-negative, got {listed}")
    total = float(w.sum())
    if abs(total - 1.0) > WEIGHTS_TOLERANCE:
        raise ValueError(f"weights must sum to 1 (within {WEIGHTS_TOLERANCE:g}), got sum {total:.6g}: {listed}")
    return w


def _stack_logits(logits: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(logits, torch.Tensor):
        if logits.dim() < 2:
            raise ValueError(f"logits must be (K, ..., P) with K teachers, got shape {tuple(logits.shape)}")
        return logits
    logits = list(logits)
    if not logits:
        raise ValueError("logits: an ensemble needs at least 1 teacher, got an empty list")
    shapes = {tuple(z.shape) for z in logits}
    if len(shapes) != 1:
        raise ValueError(f"all teachers' logits must have the same shape (..., P), got {sorted(shapes)}")
    return torch.stack(logits)


def ensemble_posteriors(
    logits: torch.Tensor | Sequence[torch.Tensor],
    temperature: float = 1.0,
    mode: str = "arithmetic",
    weights: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Combine K teachers' posteriors at ``temperature``; see the module docstring for the formulas.

    Args:
        logits: ``(K, ..., P)`` tensor, or a list of K ``(..., P)`` tensors: teacher outputs before softmax.
        temperature: T > 0; every teacher's logits are divided by T before the softmax.
        mode: ``"arithmetic"`` or ``"geometric"``.
        weights: ``(K,)`` non-negative weights summing to 1; None = uniform.

    Returns:
        ``(..., P)`` probabilities (rows sum to 1), in the logits' floating dtype (float32 for integer
        or half inputs: the combination is computed in at least float32).
    """
    z = _stack_logits(logits)
    t = check_temperature(temperature)
    if mode not in COMBINATION_MODES:
        raise ValueError(f"mode must be one of {COMBINATION_MODES}, got {mode!r}")
    w = validate_weights(weights, z.shape[0])
    dtype = z.dtype if z.dtype == torch.float64 else torch.float32
    z, w = z.to(dtype), w.to(dtype=dtype, device=z.device)
    keep = w > 0  # a teacher with weight 0 takes no part (and cannot turn 0 * -inf into nan)
    z, w = z[keep], w[keep]
    log_p = torch.log_softmax(z / t, dim=-1)  # (K', ..., P)
    w = w.view(-1, *([1] * (z.dim() - 1)))
    if mode == "arithmetic":
        return (w * log_p.exp()).sum(dim=0)
    return torch.softmax((w * log_p).sum(dim=0), dim=-1)
