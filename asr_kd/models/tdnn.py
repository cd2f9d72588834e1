"""Kaldi-style TDNN (Peddinti et al. 2015): a stack of dilated 1-D convolutions over time, each
followed by ReLU and batch norm, then a per-frame output layer. A layer with kernel ``k`` and dilation
``d`` splices the frames ``t + d * j`` for ``j = -(k-1)/2 .. (k-1)/2`` (Kaldi's ``Append(-3,0,3)`` is
``k=3, d=3``); "same" padding keeps T frames.

Hidden activations at padding frames are reset to 0 before every convolution, so each utterance
sees exactly the zero padding it would see alone: outputs at valid frames do not depend on the
padding that follows them in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from asr_kd.models.layers import ReLUNormDropout, UtteranceNorm, valid_mask

_KALDI_KERNELS = (5, 3, 3, 3, 3, 3)  # splices {-2..2}, {-1,0,1}, {-1,0,1}, {-3,0,3} x 3
_KALDI_DILATIONS = (1, 1, 1, 3, 3, 3)


@dataclass(frozen=True)
class TDNNHparams:
    """Hyper-parameters of :class:`TDNN` that a named size fixes."""

    hidden_dim: int  # channels of every TDNN layer
    kernel_sizes: tuple[int, ...] = _KALDI_KERNELS  # odd kernel of each layer, in frames
    dilations: tuple[int, ...] = _KALDI_DILATIONS  # dilation of each layer (frames between taps)
    norm: str = "batch"  # after each hidden ReLU: "batch" | "layer" | "none"


TDNN_SIZES: dict[str, TDNNHparams] = {
    "student-small": TDNNHparams(hidden_dim=80),
    "student": TDNNHparams(hidden_dim=128),
    "teacher": TDNNHparams(hidden_dim=384),
    "teacher-large": TDNNHparams(hidden_dim=768),
    "student-xl": TDNNHparams(hidden_dim=512),
    "teacher-xl": TDNNHparams(
        hidden_dim=1280, kernel_sizes=(5, 3, 3, 3, 3, 3, 3), dilations=(1, 1, 1, 3, 3, 3, 3)
    ),
}


class TDNN(nn.Module):
    """CMVN -> dilated Conv1d layers (ReLU, norm, dropout) -> per-frame logits."""

    def __init__(
        self,
        feature_dim: int,
        num_pdfs: int,
        hidden_dim: int,
        kernel_sizes: tuple[int, ...] | list[int],
        dilations: tuple[int, ...] | list[int],
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        """Args:
        feature_dim: F, input features per frame.
        num_pdfs: P, output classes.
        hidden_dim: channels of every layer.
        kernel_sizes: odd kernel size of each layer, in frames.
        dilations: dilation of each layer, same length as ``kernel_sizes``.
        norm: "batch" | "layer" | "none", after each ReLU.
        dropout: dropout probability after each layer.
        """
        super().__init__()
        if not kernel_sizes or len(kernel_sizes) != len(dilations):
            raise ValueError(
                "TDNN needs as many dilations as kernel_sizes (>= 1), got "
                f"kernel_sizes={list(kernel_sizes)}, "
                f"dilations={list(dilations)}"
            )
        if any(k < 1 or k % 2 == 0 for k in kernel_sizes) or any(d < 1 for d in dilations):
            raise ValueError(
                f"TDNN kernel_sizes must be odd and dilations >= 1 (same-length output), got "
                f"kernel_sizes={list(kernel_sizes)}, dilations={list(dilations)}"
            )
        self.input_norm = UtteranceNorm()
        in_dims = [feature_dim] + [hidden_dim] * (len(kernel_sizes) - 1)
        self.convs = nn.ModuleList(
            nn.Conv1d(i, hidden_dim, kernel_size=k, dilation=d, padding=d * (k - 1) // 2)
            for i, k, d in zip(in_dims, kernel_sizes, dilations, strict=True)
        )
        self.activations = nn.ModuleList(ReLUNormDropout(hidden_dim, norm, dropout) for _ in kernel_sizes)
        self.output = nn.Linear(hidden_dim, num_pdfs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, T, F) features, padded after ``lengths``.
            lengths: (B,) valid frames per utterance.
        Returns:
            (B, T, P) logits; rows at padding frames are meaningless.
        """
        mask = valid_mask(lengths.to(x.device), x.size(1))
        keep = mask.unsqueeze(-1)  # (B, T, 1)
        h = self.input_norm(x, mask)  # (B, T, F), 0 at padding
        for conv, activation in zip(self.convs, self.activations, strict=True):
            h = conv(h.transpose(1, 2)).transpose(1, 2)  # (B, T, H)
            h = activation(h, mask).masked_fill(~keep, 0.0)
        return self.output(h)
