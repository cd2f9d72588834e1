"""Context-window DNN of the hybrid DNN-HMM era (Hinton et al. 2012; the model of Hinton, Vinyals &
Dean 2015, section 4): each frame's input is the stack of its neighbours ``t - left .. t + right``,
followed by fully connected ReLU layers and a softmax layer over HMM-state pdf ids.

Stacking ``left + 1 + right`` frames and applying one affine layer is computed as a single ``Conv1d``
with that kernel over the (normalised) input: the same function, without materialising the stack.
Frames beyond the utterance's ends read as 0 (= the utterance mean after CMVN), so a frame's output
does not depend on the padding that follows it in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from asr_kd.models.layers import ReLUNormDropout, UtteranceNorm, valid_mask


@dataclass(frozen=True)
class DNNHparams:
    """Hyper-parameters of :class:`ContextDNN` that a named size fixes."""

    hidden_dim: int  # units per hidden layer
    num_layers: int  # hidden layers (the first is the context window's affine)
    left_context: int = 10  # past frames stacked onto each frame
    right_context: int = 10  # future frames stacked onto each frame
    norm: str = "batch"  # after each hidden ReLU: "batch" | "layer" | "none"


DNN_SIZES: dict[str, DNNHparams] = {
    "student-small": DNNHparams(hidden_dim=96, num_layers=2),
    "student": DNNHparams(hidden_dim=192, num_layers=3),
    "teacher": DNNHparams(hidden_dim=768, num_layers=3),
    "teacher-large": DNNHparams(hidden_dim=1280, num_layers=5),
    "student-xl": DNNHparams(hidden_dim=1024, num_layers=4),
    "teacher-xl": DNNHparams(hidden_dim=2048, num_layers=6),
}


class ContextDNN(nn.Module):
    """CMVN -> context window affine -> ReLU layers -> per-frame logits."""

    def __init__(
        self,
        feature_dim: int,
        num_pdfs: int,
        hidden_dim: int,
        num_layers: int,
        left_context: int,
        right_context: int,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        """Args:
        feature_dim: F, input features per frame.
        num_pdfs: P, output classes.
        hidden_dim: units per hidden layer.
        num_layers: hidden layers, >= 1.
        left_context: past frames in each frame's input window, >= 0.
        right_context: future frames in each frame's input window, >= 0.
        norm: "batch" | "layer" | "none", after each hidden ReLU.
        dropout: dropout probability after each hidden layer.
        """
        super().__init__()
        if num_layers < 1 or left_context < 0 or right_context < 0:
            raise ValueError(
                f"ContextDNN needs num_layers >= 1 and contexts >= 0, got num_layers={num_layers}, "
                f"left_context={left_context}, right_context={right_context}"
            )
        self.left_context = left_context
        self.right_context = right_context
        self.input_norm = UtteranceNorm()
        window = left_context + 1 + right_context
        self.context_affine = nn.Conv1d(feature_dim, hidden_dim, kernel_size=window)
        self.affines = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers - 1))
        self.activations = nn.ModuleList(
            ReLUNormDropout(hidden_dim, norm, dropout) for _ in range(num_layers)
        )
        self.output = nn.Linear(hidden_dim, num_pdfs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, T, F) features, padded after ``lengths``.
            lengths: (B,) valid frames per utterance.
        Returns:
            (B, T, P) logits; rows at padding frames are meaningless.
        """
        mask = valid_mask(lengths.to(x.device), x.size(1))
        h = self.input_norm(x, mask).transpose(1, 2)  # (B, F, T), 0 at padding
        h = F.pad(h, (self.left_context, self.right_context))  # (B, F, left + T + right)
        h = self.context_affine(h).transpose(1, 2)  # (B, T, H)
        h = self.activations[0](h, mask)
        for affine, activation in zip(self.affines, self.activations[1:], strict=True):
            h = activation(affine(h), mask)
        return self.output(h)
