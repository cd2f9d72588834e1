"""Masks, per-utterance CMVN and padding-aware batch norm."""

from __future__ import annotations

import pytest
import torch
from model_batches import fbank_batch

from asr_kd.models.layers import FrameNorm, MaskedBatchNorm, UtteranceNorm, valid_mask


def test_valid_mask() -> None:
    assert valid_mask(torch.tensor([3, 1, 0]), 4).tolist() == [
        [True, True, True, False],
        [True, False, False, False],
        [False, False, False, False],
    ]


def test_utterance_norm_uses_valid_frames_only_and_zeroes_padding() -> None:
    x, lengths = fbank_batch([9, 4])  # padding holds 1e3
    y = UtteranceNorm()(x, valid_mask(lengths, 9))
    for b, n in enumerate([9, 4]):
        torch.testing.assert_close(y[b, :n].mean(0), torch.zeros(80), atol=1e-5, rtol=0)
        torch.testing.assert_close(y[b, :n].var(0, unbiased=False), torch.ones(80), atol=1e-4, rtol=0)
        assert (y[b, n:] == 0).all()


def test_utterance_norm_floors_the_variance_of_constant_dims() -> None:
    x = torch.full((1, 5, 3), 2.0)
    x[0, :, 0] += torch.tensor([0.0, 0.001, 0.0, -0.001, 0.0])  # variance 4e-7, far below the floor
    y = UtteranceNorm(var_floor=1e-2)(x, torch.ones(1, 5, dtype=torch.bool))
    assert y.abs().max() <= 0.011


def test_masked_batch_norm_equals_batch_norm_of_the_valid_frames() -> None:
    torch.manual_seed(0)
    x = 3 * torch.randn(3, 7, 16) + 1
    lengths = torch.tensor([7, 2, 5])
    mask = valid_mask(lengths, 7)
    x[~mask] = 1e4  # padding must not enter the statistics
    masked, reference = MaskedBatchNorm(16), torch.nn.BatchNorm1d(16)
    for _ in range(2):  # training: batch statistics and running-statistics updates
        torch.testing.assert_close(masked(x, mask)[mask], reference(x[mask]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked.running_mean, reference.running_mean)
    torch.testing.assert_close(masked.running_var, reference.running_var)
    masked.eval(), reference.eval()
    torch.testing.assert_close(masked(x, mask)[mask], reference(x[mask]), atol=1e-5, rtol=1e-5)


def test_frame_norm_rejects_unknown_kinds_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"norm must be one of \['batch', 'layer', 'none'\], got 'group'"):
        FrameNorm("group", 8)
