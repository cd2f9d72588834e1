"""Bidirectional LSTM acoustic model (Graves et al. 2013; the BLSTM-HMM hybrid): CMVN, a stack of
BLSTM layers over whole utterances, a per-frame output layer.

Utterances are packed (``pack_padded_sequence``), so the backward direction starts at each
utterance's own last frame and outputs at valid frames do not depend on the padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr_kd.models.layers import UtteranceNorm, valid_mask


@dataclass(frozen=True)
class BLSTMHparams:
    """Hyper-parameters of :class:`BLSTM` that a named size fixes."""

    hidden_dim: int  # LSTM cells per direction
    num_layers: int  # stacked bidirectional layers


BLSTM_SIZES: dict[str, BLSTMHparams] = {
    "student-small": BLSTMHparams(hidden_dim=64, num_layers=2),
    "student": BLSTMHparams(hidden_dim=96, num_layers=2),
    "teacher": BLSTMHparams(hidden_dim=256, num_layers=2),
    "teacher-large": BLSTMHparams(hidden_dim=384, num_layers=3),
    "student-xl": BLSTMHparams(hidden_dim=320, num_layers=3),
    "teacher-xl": BLSTMHparams(hidden_dim=640, num_layers=4),
}


class BLSTM(nn.Module):
    """CMVN -> packed multi-layer BLSTM -> dropout -> per-frame logits."""

    def __init__(
        self, feature_dim: int, num_pdfs: int, hidden_dim: int, num_layers: int, dropout: float = 0.0
    ) -> None:
        """Args:
        feature_dim: F, input features per frame.
        num_pdfs: P, output classes.
        hidden_dim: LSTM cells per direction.
        num_layers: stacked bidirectional layers, >= 1.
        dropout: dropout probability between layers and before the output layer.
        """
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"BLSTM needs num_layers >= 1, got {num_layers}")
        self.input_norm = UtteranceNorm()
        self.lstm = nn.LSTM(
            feature_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(2 * hidden_dim, num_pdfs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, T, F) features, padded after ``lengths``.
            lengths: (B,) valid frames per utterance, each >= 1.
        Returns:
            (B, T, P) logits; rows at padding frames are meaningless.
        """
        total = x.size(1)
        h = self.input_norm(x, valid_mask(lengths.to(x.device), total))
        # The packing needs lengths on the CPU (one device-to-host copy on CUDA).
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=total)  # (B, T, 2H)
        return self.output(self.dropout(h))
