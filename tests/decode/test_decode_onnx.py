"""``asr-kd decode`` with ONNX models (asr_kd.models.onnx) and chunked forward passes, on the hand-set
models and cuts of test_decode_run: the same hypotheses, WER and frame accuracy as the checkpoints."""

from __future__ import annotations

import pytest
from test_decode_run import run, setup  # noqa: F401 - `setup` is the shared module fixture

from asr_kd.cli import main
from asr_kd.commands.decode import default_name
from asr_kd.models.onnx import export_onnx


@pytest.fixture(scope="module")
def onnx_models(setup):  # noqa: F811
    out = setup["tmp"] / "onnx"
    paths = {name: out / f"{name}.onnx" for name in ("exact", "swapped", "swapped-weak")}
    for name, path in paths.items():
        export_onnx(setup["models"][name], path)
    setup["models"].update({f"{name}.onnx": path for name, path in paths.items()})
    return paths


def recogs(setup, name: str) -> str:  # noqa: F811
    return (setup["tmp"] / "decode" / f"recogs-{name}.txt").read_text()


def test_onnx_decoding_gives_the_torch_hypotheses(setup, onnx_models) -> None:  # noqa: F811
    for model in ("exact", "swapped"):
        torch_result = run(setup, [model], "test", f"{model}-torch")
        onnx_result = run(setup, [f"{model}.onnx"], "test", f"{model}-onnx")
        assert recogs(setup, f"{model}-torch").replace("-torch", "") == recogs(setup, f"{model}-onnx").replace(
            "-onnx", "")  # fmt: skip
        for key in ("wer", "sub", "ins", "del", "frame_acc", "num_frames", "params", "arch", "size"):
            assert onnx_result[key] == torch_result[key], key
        assert onnx_result["models"] == [str(onnx_models[model])]
    assert run(setup, ["swapped.onnx"], "test", "swapped-onnx")["sub"] == 2  # the known substitutions


def test_mixed_ensemble_of_onnx_and_checkpoint(setup, onnx_models) -> None:  # noqa: F811
    both_torch = run(setup, ["exact", "swapped-weak"], "test", "mix-torch", acoustic_scale=1.0)
    mixed = run(setup, ["exact.onnx", "swapped-weak"], "test", "mix-onnx", acoustic_scale=1.0)
    assert mixed["frame_acc"] == pytest.approx(both_torch["frame_acc"]) and mixed["wer"] == both_torch["wer"] == 0.0
    assert mixed["params"] == both_torch["params"]


def test_mismatched_onnx_file_is_refused_with_the_file_named(setup, tmp_path) -> None:  # noqa: F811
    from asr_kd.models import ModelConfig, build_model, save_checkpoint

    p = setup["lang"].num_pdfs  # a model with one output too many
    wrong = tmp_path / "wrong.pt"
    config = ModelConfig("dnn", "student-small", num_pdfs=p + 1, feature_dim=p, dropout=0.0,
                         overrides={"hidden_dim": 4, "num_layers": 1, "left_context": 0, "right_context": 0})  # fmt: skip
    save_checkpoint(wrong, build_model(config), config)
    export_onnx(wrong, tmp_path / "wrong.onnx")
    setup["models"]["wrong.onnx"] = tmp_path / "wrong.onnx"
    with pytest.raises(ValueError, match=rf"wrong\.onnx has {p + 1} outputs \(num_pdfs\) but .* has {p} pdfs"):
        run(setup, ["wrong.onnx"], "test", "wrong", output_dir=tmp_path)
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    setup["models"]["broken.onnx"] = tmp_path / "broken.onnx"
    with pytest.raises(ValueError, match=r"broken\.onnx is not an ONNX model"):
        run(setup, ["broken.onnx"], "test", "broken", output_dir=tmp_path)


def test_chunked_decoding_gives_the_same_result_and_records_the_latency(setup, onnx_models, capsys) -> None:  # noqa: F811
    whole = run(setup, ["swapped"], "test", "swapped-whole")
    chunked = run(setup, ["swapped"], "test", "swapped-chunked", chunk_frames=4)
    assert chunked["decode_config"]["streaming"] == {"chunk_frames": 4, "cmvn": "utterance", "left_context": 0,
                                                     "right_context": 0, "latency_ms": pytest.approx(40.0)}  # fmt: skip
    assert (chunked["wer"], chunked["frame_acc"]) == (whole["wer"], whole["frame_acc"])
    from asr_kd.models import ModelConfig, build_model, save_checkpoint

    p = setup["lang"].num_pdfs
    config = ModelConfig("blstm", "student-small", num_pdfs=p, feature_dim=p)
    setup["models"]["blstm"] = save_checkpoint(setup["tmp"] / "blstm" / "best.pt", build_model(config), config)
    with pytest.raises(ValueError, match=r"runs checkpoints, not ONNX files \['.*exact\.onnx'\]"):
        run(setup, ["exact.onnx"], "test", "onnx-chunked", chunk_frames=4)
    with pytest.raises(ValueError, match="blstm/student-small sees the whole utterance"):
        run(setup, ["blstm"], "test", "blstm-chunked", chunk_frames=4)
    common = setup["common"]
    code = main(["decode", "--models", str(setup["models"]["swapped"]), "--cuts", str(setup["tmp"] / "test.jsonl.gz"),
                 "--lang-dir", str(common["lang_dir"]), "--pdf-counts", str(common["pdf_counts"]), "--lm-order", "2",
                 "--output-dir", str(setup["tmp"] / "decode"), "--name", "cli-chunked", "--chunk-frames", "3",
                 "--cmvn", "running", "--device", "cpu", "--threads", "1"])  # fmt: skip
    assert code == 0
    assert "chunks of 3 frames (running CMVN): algorithmic latency 30 ms" in capsys.readouterr().out


def test_default_name_of_an_onnx_file() -> None:
    from pathlib import Path

    assert default_name([Path("exp/x/deploy/student-kd.int8.onnx")]) == "student-kd.int8"
    assert default_name([Path("exp/x/student-kd/best-valid-acc.pt")]) == "student-kd"
