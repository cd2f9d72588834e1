"""Every arch x size: shapes, padding invariance, gradients."""

from __future__ import annotations

import pytest
import torch
from model_batches import DEVICES, NUM_PDFS, fbank_batch

from asr_kd.models import ARCHS, SIZE_NAMES, ModelConfig, build_model


@pytest.mark.parametrize("size", SIZE_NAMES)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_and_size_gives_one_logit_row_per_frame(arch: str, size: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, size, NUM_PDFS)).eval()
    x, lengths = fbank_batch([13, 7, 1])  # odd T, padded, and a one-frame utterance
    with torch.no_grad():
        logits = model(x, lengths)
    assert logits.shape == (3, 13, NUM_PDFS)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ARCHS)
def test_valid_frames_do_not_depend_on_padding(arch: str, device: str) -> None:
    """Holds for all four arches (in eval mode, and in train mode without dropout): CMVN and batch
    norm statistics skip padding, convolutions see zeros beyond each utterance, the BLSTM is packed
    and attention masks padded keys."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, "student", NUM_PDFS, dropout=0.0)).to(device)
    lens = [23, 9, 16]
    x, lengths = fbank_batch(lens, seed=1)
    longer = torch.cat([x, torch.full((3, 17, 80), -7e2)], dim=1)  # 17 more padding frames
    x, longer, lengths = x.to(device), longer.to(device), lengths.to(device)
    with torch.no_grad():
        model.train()  # batch statistics: of valid frames only
        train_out, train_longer = model(x, lengths), model(longer, lengths)
        for _ in range(3):  # non-trivial running statistics for eval
            model(x, lengths)
        model.eval()
        out, out_longer = model(x, lengths), model(longer, lengths)
        alone = [model(x[b : b + 1, :n], lengths[b : b + 1])[0] for b, n in enumerate(lens)]
    for b, n in enumerate(lens):
        torch.testing.assert_close(train_longer[b, :n], train_out[b, :n], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out_longer[b, :n], out[b, :n], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(alone[b], out[b, :n], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_gets_a_finite_gradient(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, "student-small", NUM_PDFS)).train()
    x, lengths = fbank_batch([11, 6])
    logits = model(x, lengths)
    mask = torch.arange(11) < lengths[:, None]
    labels = torch.randint(0, NUM_PDFS, (2, 11))
    torch.nn.functional.cross_entropy(logits[mask], labels[mask]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
