"""Shared fixtures-as-functions for the model tests."""

from __future__ import annotations

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NUM_PDFS = 87  # synth-digits' pdf count


def fbank_batch(
    lengths: list[int], feature_dim: int = 80, seed: int = 0, total: int | None = None, pad_value: float = 1e3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw-fbank-like random features (B, T, F) (offset and scaled, as log-mel energies are) with
    garbage ``pad_value`` after each utterance's length; ``total`` frames (default max length)."""
    gen = torch.Generator().manual_seed(seed)
    total = total if total is not None else max(lengths)
    x = 4.0 * torch.randn(len(lengths), total, feature_dim, generator=gen) + 8.0
    for b, n in enumerate(lengths):
        x[b, n:] = pad_value
    return x, torch.tensor(lengths)
