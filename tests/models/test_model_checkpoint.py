"""The checkpoint format: round trips, rebuild from the file alone, errors naming the file."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from model_batches import DEVICES, NUM_PDFS, fbank_batch

from asr_kd.models import (
    ARCHS,
    CheckpointError,
    ModelConfig,
    build_model,
    checkpoint_hash,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from asr_kd.models.checkpoint import CHECKPOINT_FORMAT


def _trained_a_little(config: ModelConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A model whose weights and batch-norm statistics differ from a fresh build, and its optimizer."""
    torch.manual_seed(0)
    model = build_model(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, lengths = fbank_batch([12, 7], seed=3)
    for _ in range(2):
        optimizer.zero_grad()
        model(x, lengths)[0, :12].logsumexp(-1).mean().backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_rebuilds_the_model_from_the_file_alone(arch: str, device: str, tmp_path: Path) -> None:
    config = ModelConfig(arch, "student-small", NUM_PDFS, dropout=0.2, overrides={})
    model, optimizer = _trained_a_little(config)
    extra = {
        "epoch": 3,
        "optimizer": optimizer.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.rand(3).tolist(),
        },
        "train_config": {"lr": 1e-2, "batch_duration_s": 200.0, "teachers": ["a.pt", "b.pt"]},
    }
    path = save_checkpoint(tmp_path / "exp" / "epoch-3.pt", model, config, extra)
    assert [p.name for p in path.parent.iterdir()] == ["epoch-3.pt"]  # no temporary file left

    loaded, loaded_config = load_model(path, device=device)
    assert loaded_config == config and not loaded.training
    assert next(loaded.parameters()).device.type == device
    x, lengths = fbank_batch([15, 8], seed=4)
    with torch.no_grad():
        expected = model.eval()(x, lengths)
        got = loaded(x.to(device), lengths.to(device)).cpu()
    if device == "cpu":
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    checkpoint = load_checkpoint(path)
    assert checkpoint.extra["epoch"] == 3 and checkpoint.extra["train_config"] == extra["train_config"]
    assert checkpoint.extra["rng"]["python"] == extra["rng"]["python"]
    assert torch.equal(checkpoint.extra["rng"]["torch"], extra["rng"]["torch"])
    assert checkpoint.num_params == sum(p.numel() for p in model.parameters())
    torch.optim.Adam(loaded.parameters()).load_state_dict(checkpoint.extra["optimizer"])


def test_overrides_and_wrappers_round_trip(tmp_path: Path) -> None:
    config = ModelConfig(
        "tdnn", "student", NUM_PDFS, overrides={"hidden_dim": 24, "kernel_sizes": [3, 5], "dilations": [2, 1]}
    )
    model = build_model(config)
    save_checkpoint(tmp_path / "m.pt", torch.nn.DataParallel(model), config)  # saved without "module."
    loaded, loaded_config = load_model(tmp_path / "m.pt")
    assert loaded_config == config and loaded.convs[0].dilation == (2,)


def test_hash_is_the_sha256_of_the_file(tmp_path: Path) -> None:
    config = ModelConfig("dnn", "student-small", NUM_PDFS)
    model = build_model(config)
    a = save_checkpoint(tmp_path / "a.pt", model, config, {"epoch": 1})
    assert checkpoint_hash(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    b = save_checkpoint(tmp_path / "b.pt", model, config, {"epoch": 2})
    assert checkpoint_hash(a) != checkpoint_hash(b)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"epoch 3\nloss 1.2\n", r"is not an asr-kd checkpoint: torch.load failed"),
        (bytes(range(256)) * 8, r"is not an asr-kd checkpoint: torch.load failed"),
        (
            {"model": {}, "epoch": 3},
            r"is not an asr-kd checkpoint: expected a dict with format='asr-kd-checkpoint', "
            r"found keys \['epoch', 'model'\]",
        ),
        ([1, 2], r"is not an asr-kd checkpoint: expected a dict .* found list"),
        (
            {"format": CHECKPOINT_FORMAT, "version": 2},
            r"has checkpoint format version 2; this asr-kd reads <= 1",
        ),
        (
            {"format": CHECKPOINT_FORMAT, "version": 1, "model": {}},
            r"is a truncated asr-kd checkpoint: it lacks \['model_config', 'extra'\]",
        ),
    ],
)
def test_foreign_files_are_rejected_naming_the_file(content: object, message: str, tmp_path: Path) -> None:
    path = tmp_path / "not-a-model.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_model(path)
    assert str(error.value).startswith(str(path))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"checkpoint {tmp_path / 'nope.pt'} does not exist"):
        load_model(tmp_path / "nope.pt")


def _payload_with(path: Path, **changes: object) -> None:
    config = ModelConfig("dnn", "student-small", NUM_PDFS)
    save_checkpoint(path, build_model(config), config)
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


def test_invalid_stored_config_is_rejected_naming_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad-config.pt"
    _payload_with(path, model_config={"arch": "cnn", "size": "student", "num_pdfs": 87})
    with pytest.raises(
        CheckpointError, match=r"bad-config.pt holds an invalid model config: model arch must be one of"
    ):
        load_model(path)
    _payload_with(path, model_config={"arch": "dnn", "size": "student", "num_pdfs": 87, "depth": 3})
    with pytest.raises(
        CheckpointError,
        match=r"bad-config.pt holds an invalid model config: unknown model config field\(s\) \['depth'\]",
    ):
        load_model(path)


def test_weights_that_do_not_fit_the_config_are_rejected_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.pt"
    _payload_with(path, model_config=ModelConfig("dnn", "student", NUM_PDFS).to_dict())
    with pytest.raises(
        CheckpointError,
        match=r"mismatch.pt: weights do not fit its model config dnn/student: .*size mismatch",
    ):
        load_model(path)


def test_save_refuses_a_model_that_does_not_match_its_config(tmp_path: Path) -> None:
    model = build_model(ModelConfig("dnn", "student-small", NUM_PDFS))
    with pytest.raises(
        ValueError,
        match=r"cannot save .*x.pt: the model's state dict does not match model_config dnn/student",
    ):
        save_checkpoint(tmp_path / "x.pt", model, ModelConfig("dnn", "student", NUM_PDFS))
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_extras_torch_load_would_refuse_and_keeps_the_old_file(tmp_path: Path) -> None:
    config = ModelConfig("dnn", "student-small", NUM_PDFS)
    model = build_model(config)
    path = save_checkpoint(tmp_path / "last.pt", model, config, {"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(
        TypeError, match=r"extra\['rng'\]\['numpy'\]\[1\] is a numpy.ndarray; a checkpoint holds only"
    ):
        save_checkpoint(path, model, config, {"epoch": 2, "rng": {"numpy": ("MT19937", np.zeros(3))}})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
