"""Tests of the ONNX export (asr_kd.models.onnx, asr_kd.models.export, ``asr-kd export``): onnxruntime
gives PyTorch's logits for every family at lengths other than the traced ones, int8 files stay close,
and foreign, corrupt or mismatched files are refused with the file named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from asr_kd.cli import main
from asr_kd.models import ModelConfig, build_model, save_checkpoint
from asr_kd.models.checkpoint import checkpoint_hash
from asr_kd.models.export import export_model, int8_path_for, report_path_for
from asr_kd.models.onnx import (
    OnnxModelError,
    describe_model_file,
    export_onnx,
    num_parameters,
    open_model_file,
    open_onnx,
    read_metadata,
)

NUM_PDFS = 11
TINY = {  # the smallest member of each family that still has all its layer types
    "dnn": {"hidden_dim": 24, "num_layers": 2, "left_context": 3, "right_context": 2},
    "tdnn": {"hidden_dim": 16, "kernel_sizes": [3, 3, 3], "dilations": [1, 1, 3]},
    "blstm": {"hidden_dim": 8, "num_layers": 2},
    "conformer": {"model_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "conv_kernel": 5},
}


def trained_like(arch: str, path: Path, seed: int = 0) -> tuple[torch.nn.Module, Path]:
    """A tiny model with random weights and non-trivial batch-norm statistics, saved as a checkpoint."""
    torch.manual_seed(seed)
    config = ModelConfig(arch, "student-small", NUM_PDFS, feature_dim=20, dropout=0.0, overrides=TINY[arch])
    model = build_model(config)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.normal_(0.0, 0.5)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    save_checkpoint(path, model, config, {"train_config": {"temperature": 2.0, "alpha": 0.5}})
    return model.eval(), path


def fbank(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn(len(lengths), max(lengths), 20, generator=gen) + 5.0
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("arch", ["dnn", "tdnn", "blstm", "conformer"])
def test_onnxruntime_gives_the_torch_logits_at_any_batch_and_length(arch, tmp_path) -> None:
    model, ckpt = trained_like(arch, tmp_path / "model.pt")
    meta = export_onnx(ckpt, tmp_path / "model.onnx")
    assert meta["weights"] == "fp32" and meta["model_config"].arch == arch
    assert meta["num_params"] == sum(p.numel() for p in model.parameters())
    assert meta["source_sha256"] == checkpoint_hash(ckpt) and meta["train_config"]["temperature"] == 2.0
    onnx_model = open_onnx(tmp_path / "model.onnx", threads=1)
    assert num_parameters(onnx_model) == num_parameters(model)
    for lengths in ([64, 59], [3, 130, 17], [9]):  # traced at (2, 64): other batch sizes and lengths
        x, n = fbank(lengths, seed=len(lengths))
        with torch.no_grad():
            expected = model(x, n)
        got = onnx_model(x, n)
        assert got.shape == expected.shape == (len(lengths), max(lengths), NUM_PDFS)
        for b, t in enumerate(lengths):
            assert torch.allclose(got[b, :t], expected[b, :t], atol=1e-4, rtol=1e-4), (arch, lengths, b)


def test_metadata_and_open_model_file_of_both_kinds(tmp_path) -> None:
    _, ckpt = trained_like("tdnn", tmp_path / "m.pt")
    export_onnx(ckpt, tmp_path / "m.onnx")
    torch_file, onnx_file = describe_model_file(ckpt), describe_model_file(tmp_path / "m.onnx")
    assert torch_file.model_config == onnx_file.model_config and torch_file.num_params == onnx_file.num_params
    assert (torch_file.weights, onnx_file.weights) == ("torch", "fp32")
    assert onnx_file.train_config == {"temperature": 2.0, "alpha": 0.5}
    x, n = fbank([40, 33])
    with torch.no_grad():
        a, b = open_model_file(ckpt)(x, n), open_model_file(tmp_path / "m.onnx", threads=1)(x, n)
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    assert float((a[0] - b[0]).abs().max()) < 1e-4


def test_corrupt_foreign_and_missing_files_are_refused_with_the_file_named(tmp_path) -> None:
    _, ckpt = trained_like("dnn", tmp_path / "m.pt")
    export_onnx(ckpt, tmp_path / "good.onnx")
    data = (tmp_path / "good.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(OnnxModelError, match=r"truncated\.onnx"):
        open_onnx(tmp_path / "truncated.onnx")
    with pytest.raises(OnnxModelError, match=r"garbage\.onnx is not an ONNX model"):
        open_onnx(tmp_path / "garbage.onnx")
    foreign = onnx.load(str(tmp_path / "good.onnx"))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(OnnxModelError, match=r"foreign\.onnx is an ONNX model but not an asr-kd one"):
        open_onnx(tmp_path / "foreign.onnx")
    # metadata claiming another number of pdfs than the graph computes
    lying = onnx.load(str(tmp_path / "good.onnx"))
    for prop in lying.metadata_props:
        if prop.key == "model_config":
            config = json.loads(prop.value)
            prop.value = json.dumps({**config, "num_pdfs": NUM_PDFS + 1})
    onnx.save(lying, str(tmp_path / "lying.onnx"))
    with pytest.raises(OnnxModelError, match=rf"lying\.onnx: the graph has {NUM_PDFS} outputs per frame but its "
                                             rf"metadata says num_pdfs {NUM_PDFS + 1}"):  # fmt: skip
        open_onnx(tmp_path / "lying.onnx")
    with pytest.raises(FileNotFoundError, match="nothere.onnx"):
        read_metadata(tmp_path / "nothere.onnx")


@pytest.fixture(scope="module")
def export_setup(tmp_path_factory, frame_data) -> dict:
    """A tiny DNN trained for a few steps on the frame_data corpus (so its logits are peaked), exported
    with static and dynamic int8."""
    root = tmp_path_factory.mktemp("export")
    cuts = frame_data.make_cuts(root / "data", "dev", 24, seed=3)
    torch.manual_seed(0)
    config = ModelConfig("dnn", "student-small", frame_data.num_classes, dropout=0.0,
                         overrides={"hidden_dim": 64, "num_layers": 2, "left_context": 1, "right_context": 1})  # fmt: skip
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):  # the corpus' rule: label = arg-max of the first 4 feature bins
        x = torch.randn(8, 30, 80, generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x, torch.full((8,), 30)).transpose(1, 2), x[..., :4].argmax(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_checkpoint(root / "student" / "best.pt", model.eval(), config)
    return {"root": root, "cuts": cuts, "ckpt": root / "student" / "best.pt"}


def test_export_stage_verifies_fp32_and_int8_on_real_cuts(export_setup) -> None:
    root = export_setup["root"]
    out = root / "deploy" / "student.onnx"
    report = export_model(export_setup["ckpt"], out, export_setup["cuts"], int8="static", num_cuts=10, batch_size=4)
    check = report["verification"]
    assert check["num_cuts"] == 10 and check["max_abs_diff_fp32"] < 1e-4
    assert 0 < check["max_abs_diff_int8"] < 1.0 and check["argmax_agreement_int8"] > 0.9
    assert json.loads(report_path_for(out).read_text())["verification"] == pytest.approx(check)
    assert read_metadata(int8_path_for(out))["weights"] == "int8-static"
    assert int8_path_for(out).stat().st_size < 0.5 * out.stat().st_size  # int8 weights: about a quarter
    assert not list(out.parent.glob(".tmp.*"))
    dynamic = export_model(export_setup["ckpt"], root / "deploy" / "dyn.onnx", export_setup["cuts"], int8="dynamic",
                           num_cuts=4)  # fmt: skip
    assert dynamic["verification"]["argmax_agreement_int8"] > 0.9
    assert read_metadata(int8_path_for(root / "deploy" / "dyn.onnx"))["weights"] == "int8-dynamic"


def test_export_verifies_each_file_in_one_pass(export_setup, monkeypatch) -> None:
    """PyTorch's logits are computed once and each ONNX file runs once per batch (3 batches of 4, 4, 2 cuts)."""
    from asr_kd.models import export

    calls: dict[str, int] = {}
    load_model, open_onnx_file = export.load_model, export.open_onnx

    def counted(name, model):
        def forward(features, lengths):
            calls[name] = calls.get(name, 0) + 1
            return model(features, lengths)

        return forward

    monkeypatch.setattr(export, "load_model", lambda path: (counted("torch", load_model(path)[0]), None))
    monkeypatch.setattr(export, "open_onnx", lambda path, threads=0: counted(Path(path).name,
                                                                            open_onnx_file(path, threads)))  # fmt: skip
    out = export_setup["root"] / "count" / "student.onnx"
    report = export.export_model(export_setup["ckpt"], out, export_setup["cuts"], int8="dynamic", num_cuts=10,
                                 batch_size=4)  # fmt: skip
    assert calls == {"torch": 3, "student.onnx": 3, "student.int8.onnx": 3}
    check = report["verification"]
    assert check["max_abs_diff_fp32"] < 1e-4 and 0 < check["max_abs_diff_int8"] < 1.0
    assert 0.9 < check["argmax_agreement_int8"] <= 1.0


def test_export_command_prints_the_verification(export_setup, capsys) -> None:
    out = export_setup["root"] / "cli" / "student.onnx"
    code = main(["export", "--model", str(export_setup["ckpt"]), "--output", str(out), "--cuts",
                 str(export_setup["cuts"]), "--num-cuts", "3"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "max |delta logit|" in printed and "over" in printed and str(report_path_for(out)) in printed
    frames = json.loads(report_path_for(out).read_text())["verification"]["num_frames"]
    assert 3 * 20 <= frames <= 3 * 80  # three cuts of 20-80 frames
    assert main(["export", "--model", str(export_setup["ckpt"]), "--output", str(out), "--cuts",
                 str(export_setup["cuts"]), "--tolerance", "-1"]) == 1  # fmt: skip
    assert "the export is wrong" in capsys.readouterr().err
    # the failed export leaves neither its model nor the earlier, passing report where decode would look
    assert not out.exists() and not report_path_for(out).exists()


def test_int8_needs_calibration_and_an_fp32_source(export_setup, tmp_path) -> None:
    from asr_kd.models.onnx import quantize_int8

    export_onnx(export_setup["ckpt"], tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="needs calibration batches"):
        quantize_int8(tmp_path / "a.onnx", tmp_path / "a.int8.onnx", mode="static")
    quantize_int8(tmp_path / "a.onnx", tmp_path / "a.int8.onnx", mode="dynamic")
    with pytest.raises(OnnxModelError, match="already has int8-dynamic weights"):
        quantize_int8(tmp_path / "a.int8.onnx", tmp_path / "b.onnx", mode="dynamic")
    assert np.isfinite(open_onnx(tmp_path / "a.int8.onnx")(*fbank_80([30]))).all()


def fbank_80(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(len(lengths), max(lengths), 80), torch.tensor(lengths)
