"""Frame-level CE with padding ignored, compute_loss's statistics, the LR schedule (hand-computed)."""

import math

import pytest
import torch
from torch import nn

from asr_kd.trainer.loop import check_labels, compute_loss, cross_entropy_loss
from asr_kd.trainer.schedule import WarmupDecay

# 2 utterances of 3 and 1 frames, 2 classes; padding rows hold logits that would dominate if counted
LOGITS = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]],
                       [[0.0, 3.0], [50.0, -50.0], [-50.0, 50.0]]])  # fmt: skip
LABELS = torch.tensor([[0, 1, 1], [1, -100, -100]])


def test_cross_entropy_ignores_padding():
    loss, stats = cross_entropy_loss(LOGITS, {"frame_labels": LABELS})
    # -log softmax per valid frame: ln 2, ln(1 + e), ln(1 + e^2), ln(1 + e^-3); mean over 4 frames
    expected = (math.log(2) + math.log(1 + math.e) + math.log(1 + math.e**2) + math.log(1 + math.exp(-3))) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["ce"].item() == pytest.approx(4 * expected, rel=1e-6)


def test_padding_logits_get_no_gradient():
    logits = LOGITS.clone().requires_grad_()
    cross_entropy_loss(logits, {"frame_labels": LABELS})[0].backward()
    assert torch.all(logits.grad[1, 1:] == 0)
    assert torch.all(logits.grad[0] != 0)


class FixedLogits(nn.Module):
    def forward(self, features, lengths):
        return LOGITS + 0 * features.sum()


def test_compute_loss_counts_frames_and_correct():
    batch = {"features": torch.zeros(2, 3, 5), "lengths": torch.tensor([3, 1]), "frame_labels": LABELS,
             "cut_ids": ["a", "b"]}  # fmt: skip
    loss, stats = compute_loss(FixedLogits(), batch, torch.device("cpu"))
    assert stats["frames"].item() == 4
    # arg-max per valid frame: 0 (tie -> first) = 0 ok, 0 != 1, 0 != 1, 1 = 1 ok
    assert stats["correct"].item() == 2
    assert stats["loss"].item() == pytest.approx(4 * loss.item())


def test_compute_loss_rejects_subsampled_output():
    batch = {"features": torch.zeros(2, 3, 5), "lengths": torch.tensor([3, 1]), "frame_labels": LABELS}

    def subsampling_model(features, lengths):  # one output per two frames
        return FixedLogits()(features, lengths)[:, ::2]

    with pytest.raises(ValueError, match="one output per input frame"):
        compute_loss(subsampling_model, batch, torch.device("cpu"))


def test_check_labels_names_the_cut():
    check_labels({"frame_labels": LABELS, "cut_ids": ["a", "b"]}, num_pdfs=2)
    with pytest.raises(ValueError, match="cut b has frame label 7"):
        check_labels({"frame_labels": torch.tensor([[0, 1], [7, -100]]), "cut_ids": ["a", "b"]}, num_pdfs=2)


def test_warmup_then_cosine_and_linear_decay():
    cosine = WarmupDecay(warmup_steps=4, total_steps=14, decay="cosine", min_ratio=0.1)
    assert [cosine(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine(4) == 1.0
    assert cosine(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert cosine(14) == pytest.approx(0.1) and cosine(100) == pytest.approx(0.1)
    linear = WarmupDecay(warmup_steps=0, total_steps=10, decay="linear", min_ratio=0.0)
    assert linear(0) == 1.0 and linear(5) == pytest.approx(0.5) and linear(10) == 0.0
    assert WarmupDecay(2, 10, "constant")(7) == 1.0
    with pytest.raises(ValueError, match="lr_decay must be one of"):
        WarmupDecay(2, 10, "step")
