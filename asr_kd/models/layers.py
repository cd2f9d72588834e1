"""Building blocks shared by the acoustic models: padding masks, per-utterance input normalisation,
batch norm whose statistics skip padding, and the hidden-layer nonlinearity block.

Layout everywhere: ``x: (B, T, C)`` batch-first frames, ``lengths: (B,)`` valid frames per utterance,
``mask: (B, T)`` bool, True at valid (non-padding) frames.
"""

from __future__ import annotations

import torch
from torch import nn

NORM_KINDS = ("batch", "layer", "none")


def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``mask[b, t] = t < lengths[b]``.

    Args:
        lengths: (B,) valid frames per utterance (any integer dtype, any device).
        max_len: T, the padded length.
    Returns:
        (B, T) bool on ``lengths.device``.
    """
    frames = torch.arange(max_len, device=lengths.device)
    return frames.unsqueeze(0) < lengths.unsqueeze(1)


class UtteranceNorm(nn.Module):
    """Per-utterance mean and variance normalisation (CMVN) of the input features, over valid frames
    only, so raw fbank works and the result does not depend on how much padding follows. Padding
    frames are set to 0 (= the utterance mean), which is also what a zero-padded convolution sees
    beyond the utterance's ends. Statistics are computed in float32 (safe under autocast).
    No parameters.
    """

    def __init__(self, var_floor: float = 1e-2) -> None:
        """Args:
        var_floor: lower bound on the per-dimension variance, in squared feature units; keeps
            near-constant dimensions (digital silence) from being blown up to unit variance.
        """
        super().__init__()
        self.var_floor = var_floor

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, T, F) features.
            mask: (B, T) bool, True at valid frames.
        Returns:
            (B, T, F) in ``x.dtype``, zero-mean unit-variance per utterance and dimension; 0 at
            padding.
        """
        m = mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
        xf = x.to(torch.float32)
        count = m.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1, 1)
        mean = (xf * m).sum(dim=1, keepdim=True) / count  # (B, 1, F)
        centred = (xf - mean) * m
        var = (centred**2).sum(dim=1, keepdim=True) / count
        return (centred * torch.rsqrt(var.clamp(min=self.var_floor))).to(x.dtype)


class MaskedBatchNorm(nn.Module):
    """Batch norm over the channel dim of (B, T, C) frames whose training statistics use valid frames
    only (padding would otherwise bias them with zeros). Eval uses running statistics, like
    ``nn.BatchNorm1d`` (same momentum, eps, unbiased running variance). Selecting the valid frames costs
    one host synchronisation per layer in training mode.
    """

    def __init__(self, num_channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        """Args:
        num_channels: C.
        momentum: weight of the current batch in the running statistics.
        eps: added to the variance before the square root.
        """
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, T, C).
            mask: (B, T) bool, True at valid frames.
        Returns:
            (B, T, C) normalised, in ``x.dtype``.
        """
        xf = x.to(torch.float32)
        if self.training:
            # statistics of the valid frames only; one (N, C) copy instead of masked (B, T, C) temporaries
            var, mean = torch.var_mean(xf[mask], dim=0, unbiased=False)
            with torch.no_grad():
                count = mask.sum().to(torch.float32)
                unbiased = var * count / (count - 1.0).clamp(min=1.0)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps) * self.weight
        y = torch.addcmul(self.bias - mean * scale, xf, scale)  # x * scale + shift: one (B, T, C) output
        return y.to(x.dtype)


class FrameNorm(nn.Module):
    """Per-frame feature normalisation chosen by name: ``"batch"`` (:class:`MaskedBatchNorm`),
    ``"layer"`` (``nn.LayerNorm``) or ``"none"``."""

    def __init__(self, kind: str, num_channels: int) -> None:
        """Args:
        kind: one of ``NORM_KINDS``.
        num_channels: C.
        """
        super().__init__()
        if kind not in NORM_KINDS:
            raise ValueError(f"norm must be one of {list(NORM_KINDS)}, got {kind!r}")
        self.kind = kind
        self.norm: nn.Module | None = None
        if kind == "batch":
            self.norm = MaskedBatchNorm(num_channels)
        elif kind == "layer":
            self.norm = nn.LayerNorm(num_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C), mask: (B, T) -> (B, T, C)."""
        if self.kind == "batch":
            return self.norm(x, mask)
        if self.kind == "layer":
            return self.norm(x)
        return x


class ReLUNormDropout(nn.Module):
    """What follows each affine/convolution of a hidden layer, in Kaldi's ``relu-batchnorm`` order:
    ReLU, then :class:`FrameNorm`, then dropout."""

    def __init__(self, num_channels: int, norm: str, dropout: float) -> None:
        """Args:
        num_channels: C.
        norm: one of ``NORM_KINDS``.
        dropout: dropout probability.
        """
        super().__init__()
        self.norm = FrameNorm(norm, num_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) pre-activations, mask: (B, T) -> (B, T, C)."""
        return self.dropout(self.norm(torch.relu(x), mask))
