"""Conformer acoustic model (Gulati et al. 2020) at the full frame rate (no subsampling): CMVN, a
linear input projection, Conformer blocks, a per-frame output layer.

The block is torchaudio's ``ConformerLayer`` (macaron half-step feed-forwards, self-attention with a
key padding mask, convolution module, final layer norm; no positional encoding: the depthwise
convolutions carry order), rewritten here for one reason: torchaudio's convolution module convolves
over padding frames and its batch norm counts them, so a frame's output would change with the
padding a batch adds. Here the depthwise convolution's input is 0 at padding and the batch norm
skips padding, so outputs at valid frames do not depend on the padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from asr_kd.models.layers import MaskedBatchNorm, UtteranceNorm, valid_mask


@dataclass(frozen=True)
class ConformerHparams:
    """Hyper-parameters of :class:`ConformerAM` that a named size fixes."""

    model_dim: int  # attention / residual width
    num_heads: int  # attention heads (must divide model_dim)
    ffn_dim: int  # hidden units of each feed-forward module
    num_layers: int  # Conformer blocks
    conv_kernel: int = 15  # odd depthwise convolution kernel, in frames (15 = +-70 ms)


CONFORMER_SIZES: dict[str, ConformerHparams] = {
    "student-small": ConformerHparams(model_dim=48, num_heads=4, ffn_dim=192, num_layers=2),
    "student": ConformerHparams(model_dim=64, num_heads=4, ffn_dim=256, num_layers=3),
    "teacher": ConformerHparams(model_dim=144, num_heads=4, ffn_dim=576, num_layers=4, conv_kernel=31),
    "teacher-large": ConformerHparams(model_dim=256, num_heads=4, ffn_dim=1024, num_layers=6, conv_kernel=31),
    "student-xl": ConformerHparams(model_dim=256, num_heads=4, ffn_dim=1024, num_layers=4, conv_kernel=31),
    "teacher-xl": ConformerHparams(model_dim=384, num_heads=6, ffn_dim=1536, num_layers=10, conv_kernel=31),
}


class FeedForward(nn.Module):
    """LayerNorm -> Linear -> SiLU -> dropout -> Linear -> dropout."""

    def __init__(self, model_dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(model_dim),
            nn.Linear(model_dim, ffn_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, model_dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        return self.net(x)


class ConvModule(nn.Module):
    """LayerNorm -> pointwise conv -> GLU -> (padding := 0) -> depthwise conv -> masked batch norm ->
    SiLU -> pointwise conv -> dropout."""

    def __init__(self, model_dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conformer conv_kernel must be odd (same-length output), got {kernel_size}")
        self.layer_norm = nn.LayerNorm(model_dim)
        self.pointwise_in = nn.Linear(model_dim, 2 * model_dim)
        self.depthwise = nn.Conv1d(
            model_dim, model_dim, kernel_size, padding=(kernel_size - 1) // 2, groups=model_dim
        )
        self.batch_norm = MaskedBatchNorm(model_dim)
        self.pointwise_out = nn.Linear(model_dim, model_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D), mask: (B, T) True at valid frames -> (B, T, D)."""
        h = nn.functional.glu(self.pointwise_in(self.layer_norm(x)), dim=-1)
        h = h.masked_fill(~mask.unsqueeze(-1), 0.0)
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)
        h = nn.functional.silu(self.batch_norm(h, mask))
        return self.dropout(self.pointwise_out(h))


class ConformerBlock(nn.Module):
    """x + FFN/2 -> x + MHSA -> x + Conv -> x + FFN/2 -> LayerNorm."""

    def __init__(
        self, model_dim: int, num_heads: int, ffn_dim: int, conv_kernel: int, dropout: float
    ) -> None:
        super().__init__()
        self.ffn1 = FeedForward(model_dim, ffn_dim, dropout)
        self.attn_norm = nn.LayerNorm(model_dim)
        self.attn = nn.MultiheadAttention(model_dim, num_heads, dropout=dropout, batch_first=True)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(model_dim, conv_kernel, dropout)
        self.ffn2 = FeedForward(model_dim, ffn_dim, dropout)
        self.final_norm = nn.LayerNorm(model_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D), mask: (B, T) True at valid frames -> (B, T, D)."""
        x = x + 0.5 * self.ffn1(x)
        h = self.attn_norm(x)
        h, _ = self.attn(h, h, h, key_padding_mask=~mask, need_weights=False)
        x = x + self.attn_dropout(h)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x)


class ConformerAM(nn.Module):
    """CMVN -> Linear(F, D) -> dropout -> Conformer blocks -> per-frame logits."""

    def __init__(
        self,
        feature_dim: int,
        num_pdfs: int,
        model_dim: int,
        num_heads: int,
        ffn_dim: int,
        num_layers: int,
        conv_kernel: int,
        dropout: float = 0.0,
    ) -> None:
        """Args:
        feature_dim: F, input features per frame.
        num_pdfs: P, output classes.
        model_dim: D, attention / residual width.
        num_heads: attention heads, dividing D.
        ffn_dim: hidden units of each feed-forward module.
        num_layers: Conformer blocks, >= 1.
        conv_kernel: odd depthwise convolution kernel, in frames.
        dropout: dropout probability in every module.
        """
        super().__init__()
        if num_layers < 1 or model_dim % num_heads != 0:
            raise ValueError(
                f"ConformerAM needs num_layers >= 1 and num_heads dividing model_dim, got "
                f"num_layers={num_layers}, model_dim={model_dim}, num_heads={num_heads}"
            )
        self.input_norm = UtteranceNorm()
        self.input_proj = nn.Linear(feature_dim, model_dim)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            ConformerBlock(model_dim, num_heads, ffn_dim, conv_kernel, dropout) for _ in range(num_layers)
        )
        self.output = nn.Linear(model_dim, num_pdfs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, T, F) features, padded after ``lengths``.
            lengths: (B,) valid frames per utterance, each >= 1.
        Returns:
            (B, T, P) logits; rows at padding frames are meaningless.
        """
        mask = valid_mask(lengths.to(x.device), x.size(1))
        h = self.input_dropout(self.input_proj(self.input_norm(x, mask)))  # (B, T, D)
        for block in self.blocks:
            h = block(h, mask)
        return self.output(h)
