"""GMM features: DCT, liftering, CMN, deltas, batching, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from asr_kd.align.feats import gmm_features


def test_shapes_single_and_batched() -> None:
    torch.manual_seed(0)
    assert gmm_features(torch.randn(57, 80)).shape == (57, 39)
    batched = gmm_features(torch.randn(3, 40, 80), torch.tensor([40, 17, 3]))
    assert batched.shape == (3, 40, 39)
    assert torch.all(batched[1, 17:] == 0) and torch.all(batched[2, 3:] == 0)
    assert gmm_features(torch.randn(10, 80), num_ceps=20).shape == (10, 60)


def test_cmn_zero_mean_per_utterance() -> None:
    torch.manual_seed(1)
    fbank = torch.randn(2, 50, 80) * 3 + 7
    lengths = torch.tensor([50, 21])
    feats = gmm_features(fbank, lengths)
    assert feats[0, :, :13].mean(0).abs().max() < 1e-5
    assert feats[1, :21, :13].mean(0).abs().max() < 1e-5  # padding excluded from the mean
    # without CMN c0 would be sqrt(80) * 7 ~ 62.6: the mean really was removed
    assert gmm_features(fbank[0])[:, 0].abs().mean() < 10


def test_dct_of_constant_log_mel_is_c0_only() -> None:
    # A constant log-mel vector v: orthonormal DCT-II gives c0 = sqrt(1/80) * 80 v = sqrt(80) v, c_k = 0.
    # Two frames with different constants a, b: after CMN c0 = +-sqrt(80)(a - b)/2; liftering leaves c0.
    a, b = 5.0, 2.0
    fbank = torch.tensor([[a] * 80, [b] * 80])
    for lifter in (0.0, 22.0):
        ceps = gmm_features(fbank, cepstral_lifter=lifter)[:, :13]
        expected_c0 = math.sqrt(80) * (a - b) / 2
        assert ceps[0, 0].item() == pytest.approx(expected_c0, abs=1e-5)
        assert ceps[1, 0].item() == pytest.approx(-expected_c0, abs=1e-5)
        assert ceps[:, 1:].abs().max() < 1e-4  # float32 DCT round-off, x12 by the lifter


def test_liftering_scales_cepstra_by_kaldi_coefficients() -> None:
    torch.manual_seed(2)
    fbank = torch.randn(30, 80)
    plain = gmm_features(fbank, cepstral_lifter=0.0)[:, :13]
    liftered = gmm_features(fbank, cepstral_lifter=22.0)[:, :13]
    coeffs = 1 + 11 * torch.sin(math.pi * torch.arange(13) / 22)  # c1: 1 + 11 sin(pi/22) = 2.5655
    assert coeffs[1].item() == pytest.approx(2.5655, abs=1e-4)
    torch.testing.assert_close(liftered, plain * coeffs, rtol=1e-5, atol=1e-5)


def test_deltas_of_linear_ramp() -> None:
    # log-mel energies rising by s per frame in every band: c0(t) = sqrt(80) s t + const, so
    # delta c0 = sum_{n=1,2} n (c(t+n) - c(t-n)) / (2 (1 + 4)) = sqrt(80) s (2 + 8) / 10 = sqrt(80) s
    # away from the 2 edge frames, and delta-delta = 0 away from the 4 edge frames.
    slope, num_frames = 0.5, 20
    fbank = (slope * torch.arange(num_frames, dtype=torch.float32))[:, None].expand(-1, 80)
    feats = gmm_features(fbank)
    delta_c0, delta2_c0 = feats[:, 13], feats[:, 26]
    interior = slice(2, num_frames - 2)
    torch.testing.assert_close(
        delta_c0[interior], torch.full((num_frames - 4,), math.sqrt(80) * slope), rtol=1e-5, atol=1e-5
    )
    assert delta2_c0[4 : num_frames - 4].abs().max() < 1e-4
    # replicate padding at the first frame: (1 * (c1 - c0) + 2 * (c2 - c0)) / 10 = 0.5 * sqrt(80) s
    assert delta_c0[0].item() == pytest.approx(0.5 * math.sqrt(80) * slope, abs=1e-5)
    assert feats[:, 14:26].abs().max() < 1e-4  # higher cepstra of a flat spectrum stay zero


def test_batched_equals_per_utterance() -> None:
    torch.manual_seed(3)
    lengths = [31, 12, 5, 1]
    utts = [torch.randn(n, 80) * 2 + 4 for n in lengths]
    batch = torch.nn.utils.rnn.pad_sequence(utts, batch_first=True, padding_value=123.0)
    batched = gmm_features(batch, torch.tensor(lengths))
    for i, utt in enumerate(utts):
        torch.testing.assert_close(batched[i, : lengths[i]], gmm_features(utt), rtol=1e-5, atol=1e-5)


def test_bad_input_named() -> None:
    with pytest.raises(ValueError, match="fbank"):
        gmm_features(torch.randn(80))
    with pytest.raises(ValueError, match="lengths"):
        gmm_features(torch.randn(2, 10, 80), torch.tensor([10, 11]))
