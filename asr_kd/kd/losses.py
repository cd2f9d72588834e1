"""The distillation loss of Hinton et al. (2015), per frame, averaged over non-padding frames.

Usage::

    from asr_kd.kd.losses import distillation_loss, sparse_distillation_loss
    loss = distillation_loss(student_logits, soft_targets, frame_labels, temperature=2.0, alpha=0.5)
    loss = sparse_distillation_loss(student_logits, target_ids, target_probs, frame_labels, 2.0, 0.5)

Per frame (docs/design.md): ``L = α T² KL(p_T || q_T) + (1 − α) CE(y, q_1)``, with ``p_T`` the ensemble
soft targets at temperature T, ``q_T = softmax(z / T)`` the student's posteriors at T, ``q_1`` at T = 1 and
``y`` the frame label. The T² keeps the soft term's gradients on the scale of the hard term's when T changes.
α = 0 is plain cross entropy on the labels (no soft targets needed); α = 1 is pure distillation (no labels
needed). A frame takes part when its label is not ``IGNORE_INDEX`` (-100) and, if ``mask`` is given, its
mask is True; the other frames are dropped before anything is computed, so their logits and targets can
hold anything (even nan) and get zero gradient.

Unlabeled frames (a transfer set: cuts without transcripts or frame labels) are marked by ``soft_only``:
they take part with the soft term only, ``α T² KL(p_T || q_T)`` (their labels are not read), while labeled
frames get the mixed loss; the mean is over all frames that take part, so that a frame's soft term has
the same weight whether or not it is labeled.

The sparse variant takes top-k soft targets and completes them with the rule of ``asr_kd.kd.cache.topk``
(the mass the top-k leave out spread uniformly over the other P − k pdfs), the same rule the soft-target
cache reader uses: the loss on a top-k cache equals the dense loss on the cache's reconstructed targets.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from asr_kd.batch import IGNORE_INDEX
from asr_kd.kd.cache.topk import densify_topk
from asr_kd.kd.ensemble import check_temperature


class DistillationTerms(NamedTuple):
    """The loss and its two terms, reduced over the ``num_frames`` frames that take part."""

    loss: torch.Tensor  # α T² kl + (1 − α) ce
    kl: torch.Tensor  # KL(p_T || q_T) in nats over every frame (0 when α = 0: not computed)
    ce: torch.Tensor  # CE(y, q_1) in nats over the labeled frames (0 when α = 1: not computed)
    num_frames: int  # frames that take part, labeled and unlabeled
    num_labeled: int = -1  # labeled frames among them (-1: not counted)


def distillation_loss(
    student_logits: torch.Tensor,
    soft_targets: torch.Tensor | None,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    soft_only: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar distillation loss with dense soft targets.

    Args:
        student_logits: ``(B, T, P)`` (any ``(..., P)``) student outputs before softmax.
        soft_targets: ``(B, T, P)`` probabilities at ``temperature`` (None only when ``alpha == 0``).
        labels: ``(B, T)`` int pdf ids, ``IGNORE_INDEX`` on padding (None only when ``alpha == 1``).
        temperature: T > 0 of the soft targets and of ``q_T``.
        alpha: weight of the soft term, in [0, 1].
        mask: optional ``(B, T)`` bool, True on frames that take part.
        reduction: ``"mean"`` over the frames that take part (0 when there are none), or ``"sum"``.
        soft_only: optional ``(B, T)`` bool, True on unlabeled frames (soft term only; module docstring).
    """
    return distillation_terms(
        student_logits, labels, temperature, alpha, soft_targets=soft_targets, mask=mask, reduction=reduction,
        soft_only=soft_only,
    ).loss  # fmt: skip


def sparse_distillation_loss(
    student_logits: torch.Tensor,
    target_ids: torch.Tensor | None,
    target_probs: torch.Tensor | None,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    soft_only: torch.Tensor | None = None,
) -> torch.Tensor:
    """As :func:`distillation_loss`, with top-k soft targets ``target_ids (B, T, k)`` (int pdf ids,
    distinct per frame) and ``target_probs (B, T, k)`` (their probabilities at T, not renormalised)."""
    return distillation_terms(
        student_logits, labels, temperature, alpha, target_ids=target_ids, target_probs=target_probs,
        mask=mask, reduction=reduction, soft_only=soft_only,
    ).loss  # fmt: skip


def frames_taking_part(shape: torch.Size, labels: torch.Tensor | None, mask: torch.Tensor | None,
                       device: torch.device) -> torch.Tensor:
    """``shape`` bool: True where ``labels != IGNORE_INDEX`` and ``mask`` (each when given)."""
    valid = torch.ones(shape, dtype=torch.bool, device=device)
    if labels is not None:
        if labels.shape != shape:
            raise ValueError(f"labels must have the logits' shape without P, {tuple(shape)}, got {tuple(labels.shape)}")
        valid &= labels != IGNORE_INDEX
    if mask is not None:
        if mask.shape != shape:
            raise ValueError(f"mask must have the logits' shape without P, {tuple(shape)}, got {tuple(mask.shape)}")
        valid &= mask.bool()
    return valid


def _soft_targets_of_frames(valid, num_pdfs, soft_targets, target_ids, target_probs) -> torch.Tensor:
    """``(N, P)`` soft targets of the frames taking part, from the dense or the top-k form."""
    lead = tuple(valid.shape)
    if soft_targets is not None:
        if target_ids is not None or target_probs is not None:
            raise ValueError("give either soft_targets (dense) or target_ids + target_probs (top-k), not both")
        if tuple(soft_targets.shape) != (*lead, num_pdfs):
            raise ValueError(f"soft_targets must have shape {(*lead, num_pdfs)}, got {tuple(soft_targets.shape)}")
        return soft_targets[valid]
    if target_ids is None or target_probs is None:
        raise ValueError("alpha > 0 needs soft targets: soft_targets, or target_ids and target_probs")
    if tuple(target_ids.shape[:-1]) != lead or target_ids.shape != target_probs.shape:
        raise ValueError(
            f"target_ids and target_probs must both have shape {(*lead, 'k')}, "
            f"got {tuple(target_ids.shape)} and {tuple(target_probs.shape)}"
        )
    return densify_topk(target_ids[valid], target_probs[valid], num_pdfs)


def distillation_terms(
    student_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    soft_targets: torch.Tensor | None = None,
    target_ids: torch.Tensor | None = None,
    target_probs: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    soft_only: torch.Tensor | None = None,
) -> DistillationTerms:
    """The loss with its KL and CE terms (for logging); arguments as in the two loss functions.

    With ``soft_only`` the loss is ``(α T² Σ_all KL + (1 − α) Σ_labeled CE) / N_all`` (``"mean"``).
    """
    t = check_temperature(temperature)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if alpha < 1 and labels is None:
        raise ValueError(f"labels are needed for the hard-label term when alpha < 1, got alpha={alpha} and None")
    num_pdfs = student_logits.shape[-1]
    lead = student_logits.shape[:-1]
    device = student_logits.device
    if soft_only is not None:
        if soft_only.shape != lead:
            raise ValueError(f"soft_only must have the logits' shape without P, {tuple(lead)}, got "
                             f"{tuple(soft_only.shape)}")  # fmt: skip
        unlabeled = soft_only.to(device).bool() & frames_taking_part(lead, None, mask, device)
        if alpha == 0 and bool(unlabeled.any()):
            raise ValueError("unlabeled (soft_only) frames need alpha > 0: with alpha = 0 they have no loss term")
        labeled = frames_taking_part(lead, labels, mask, device) & ~unlabeled
        valid = labeled | unlabeled
    else:
        valid = labeled = frames_taking_part(lead, labels, mask, device)
    z = student_logits[valid]  # (N, P)
    z = z if z.dtype == torch.float64 else z.float()
    num_frames = z.shape[0]
    zero = z.sum() * 0.0  # keeps the graph and the device, even with no frames
    kl = ce = zero
    if alpha > 0:
        p = _soft_targets_of_frames(valid, num_pdfs, soft_targets, target_ids, target_probs).to(z.dtype)
        # KL(p || q_T) = sum_i p_i (log p_i - log q_T,i), with 0 log 0 = 0
        kl = (torch.xlogy(p, p) - p * torch.log_softmax(z / t, dim=-1)).sum()
    is_labeled = labeled[valid]  # (N,) which of the frames taking part have a label
    num_labeled = int(is_labeled.sum())
    if alpha < 1:
        y = labels.to(device)[valid][is_labeled].long()
        if num_labeled and (int(y.min()) < 0 or int(y.max()) >= num_pdfs):
            raise ValueError(
                f"labels must be pdf ids in [0, {num_pdfs}) or {IGNORE_INDEX}, got [{int(y.min())}, {int(y.max())}]"
            )
        ce = F.cross_entropy(z[is_labeled], y, reduction="sum") if num_labeled else zero
    if reduction == "mean" and num_frames:
        kl, ce = kl / num_frames, ce / num_frames
    if alpha == 0:
        loss = ce
    elif alpha == 1:
        loss = (t * t) * kl
    else:
        loss = alpha * (t * t) * kl + (1.0 - alpha) * ce
    return DistillationTerms(loss=loss, kl=kl, ce=ce, num_frames=num_frames, num_labeled=num_labeled)
