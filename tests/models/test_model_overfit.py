"""A tiny context-window DNN memorises a small padded batch of random frame labels."""

from __future__ import annotations

import pytest
import torch
from model_batches import DEVICES, fbank_batch

from asr_kd.models import ModelConfig, build_model


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_dnn_overfits_random_frame_labels(device: str) -> None:
    torch.manual_seed(0)
    num_pdfs = 10
    overrides = {"hidden_dim": 64, "num_layers": 2, "left_context": 3, "right_context": 3}
    model = build_model(ModelConfig("dnn", "student", num_pdfs, dropout=0.0, overrides=overrides)).to(device)
    x, lengths = fbank_batch([50, 37, 44, 29], seed=5)  # 160 labelled frames
    labels = torch.randint(0, num_pdfs, x.shape[:2])
    mask = torch.arange(x.size(1)) < lengths[:, None]
    x, lengths, labels, mask = x.to(device), lengths.to(device), labels.to(device), mask.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, lengths)[mask], labels[mask])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(x, lengths).argmax(-1)[mask] == labels[mask]).float().mean().item()
    assert losses[0] > 1.8  # about ln(10) = 2.3 at the start
    assert losses[-1] < losses[0] / 100, losses[::10]  # ~1500x in practice
    assert accuracy >= 0.99, accuracy
