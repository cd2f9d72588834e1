"""ONNX deployment of the acoustic models: export a checkpoint, run it with onnxruntime, int8 weights.

An exported model is one ONNX file with the checkpoint's forward pass, CMVN included (every model
normalises its raw fbank input per utterance, :class:`asr_kd.models.layers.UtteranceNorm`), so it takes
what the cuts store::

    inputs   features  (batch, frames, feature_dim) float32, zero-padded after each utterance's length
             lengths   (batch,) int64, valid frames per utterance
    output   logits    (batch, frames, num_pdfs) float32 (rows at padding frames are meaningless)

Both the batch and the time axis are dynamic. The file's ``metadata_props`` make it self-describing
(:data:`METADATA_KEYS`): the format tag ``asr-kd-onnx``, the model config, the parameter count of the
source checkpoint, the source's path and sha256, its train config and the weight type (``fp32`` or
``int8-static`` / ``int8-dynamic``). :func:`open_model_file` opens a checkpoint or an ONNX file behind the
same ``model(features, lengths) -> logits`` call (:data:`asr_kd.batch.AcousticModel`), so training,
evaluation and decoding code need not know which it runs.

Usage::

    info = export_onnx("exp/x/student-kd/best-valid-acc.pt", "exp/x/deploy/student-kd.onnx")
    quantize_int8("exp/x/deploy/student-kd.onnx", "exp/x/deploy/student-kd.int8.onnx", mode="static",
                  calibration=[batch["features"] ... ])
    model = open_model_file("exp/x/deploy/student-kd.int8.onnx", threads=1)
    logits = model(features, lengths)                      # torch in, torch out

The exporter is chosen per family (:data:`EXPORTERS`): torch's TorchScript-based exporter for the DNN,
TDNN and BLSTM (it keeps the packed BLSTM's dynamic lengths; torch.export cannot trace the packing), and
the torch.export-based (dynamo) exporter for the Conformer (the TorchScript exporter bakes the traced
frame count into the attention's reshapes). :func:`compare_logits` checks the result on real cuts.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from asr_kd.models.checkpoint import load_checkpoint, model_from_checkpoint
from asr_kd.models.config import ModelConfig
from asr_kd.utils import atomic_output, file_sha256

ONNX_FORMAT = "asr-kd-onnx"
ONNX_VERSION = 1
OPSET = 17
INPUT_NAMES = ("features", "lengths")
OUTPUT_NAME = "logits"
#: the metadata_props every exported file carries (values are strings; JSON where structured)
METADATA_KEYS = ("format", "version", "model_config", "num_params", "source", "source_sha256", "train_config",
                 "weights")  # fmt: skip
WEIGHT_TYPES = ("fp32", "int8-static", "int8-dynamic")
#: family -> torch exporter ("torchscript": torch.onnx.export(dynamo=False); "dynamo": torch.export based)
EXPORTERS = {"dnn": "torchscript", "tdnn": "torchscript", "blstm": "torchscript", "conformer": "dynamo"}


class OnnxModelError(ValueError):
    """An ONNX file that is not a usable asr-kd model; the message names the file and what is wrong."""


def is_onnx_path(path: Path | str) -> bool:
    """Whether ``path`` names an ONNX model (by its ``.onnx`` suffix)."""
    return Path(path).suffix == ".onnx"


def _export_graph(model: nn.Module, arch: str, path: Path, example: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Write ``model``'s graph to ``path`` with a dynamic batch and time axis (module docstring)."""
    exporter = EXPORTERS[arch]
    quiet = contextlib.redirect_stdout(io.StringIO())  # the dynamo exporter prints its progress
    with torch.no_grad(), warnings.catch_warnings(), quiet:
        warnings.simplefilter("ignore")  # tracer and deprecation warnings about code we do not own
        if exporter == "dynamo":
            batch, frames = torch.export.Dim("batch", min=1), torch.export.Dim("frames", min=2)
            program = torch.onnx.export(model, example, dynamo=True, input_names=list(INPUT_NAMES),
                                        output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch, 1: frames}, {0: batch}),
                                        optimize=True, external_data=False)  # fmt: skip
            program.save(str(path), external_data=False)
        else:
            torch.onnx.export(model, example, str(path), dynamo=False, opset_version=OPSET,
                              input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                              dynamic_axes={"features": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
                                            OUTPUT_NAME: {0: "batch", 1: "frames"}})  # fmt: skip


def _set_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` (keys of METADATA_KEYS; non-strings as JSON) in the model's metadata_props."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key in METADATA_KEYS:
        value = metadata[key]
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    onnx.save(proto, str(path))


def read_metadata(path: Path | str) -> dict[str, Any]:
    """The asr-kd metadata of an ONNX file (JSON values decoded); raises OnnxModelError naming the file when
    it is missing, not ONNX, or not written by :func:`export_onnx`."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError and others on foreign bytes
        raise OnnxModelError(f"{path} is not an ONNX model: onnx.load failed ({type(error).__name__}: "
                             f"{str(error).strip()[:200]})") from error  # fmt: skip
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get("format") != ONNX_FORMAT:
        raise OnnxModelError(f"{path} is an ONNX model but not an asr-kd one: metadata_props format is "
                             f"{props.get('format')!r}, expected {ONNX_FORMAT!r} (write it with asr-kd export)")  # fmt: skip
    missing = [k for k in METADATA_KEYS if k not in props]
    if missing:
        raise OnnxModelError(f"{path}: metadata_props lack {missing}")
    meta: dict[str, Any] = {}
    for key in METADATA_KEYS:
        try:
            meta[key] = props[key] if key in ("format", "source", "source_sha256", "weights") else json.loads(props[key])
        except json.JSONDecodeError as error:
            raise OnnxModelError(f"{path}: metadata_props[{key!r}] is not JSON ({error})") from error
    if not isinstance(meta["version"], int) or meta["version"] > ONNX_VERSION:
        raise OnnxModelError(f"{path} has asr-kd ONNX version {meta['version']!r}; this asr-kd reads <= {ONNX_VERSION}")
    if meta["weights"] not in WEIGHT_TYPES:
        raise OnnxModelError(f"{path}: metadata_props weights is {meta['weights']!r}, expected one of {WEIGHT_TYPES}")
    try:
        meta["model_config"] = ModelConfig.from_dict(meta["model_config"])
    except (TypeError, ValueError) as error:
        raise OnnxModelError(f"{path} holds an invalid model config: {error}") from error
    return meta


def export_onnx(checkpoint: Path | str, onnx_path: Path | str, example_frames: int = 64) -> dict[str, Any]:
    """Export the model of ``checkpoint`` to ``onnx_path`` (fp32; written atomically).

    The trace runs on a random batch of two utterances of ``example_frames`` and ``example_frames - 5``
    frames (any length works afterwards). Returns the metadata stored in the file (:func:`read_metadata`).
    """
    checkpoint, onnx_path = Path(checkpoint), Path(onnx_path)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, "cpu")
    config = ckpt.model_config
    generator = torch.Generator().manual_seed(0)
    example = (torch.randn(2, example_frames, config.feature_dim, generator=generator),
               torch.tensor([example_frames, example_frames - 5], dtype=torch.int64))  # fmt: skip
    metadata = {
        "format": ONNX_FORMAT, "version": ONNX_VERSION, "model_config": config.to_dict(),
        "num_params": sum(p.numel() for p in model.parameters()), "source": str(checkpoint),
        "source_sha256": file_sha256(checkpoint), "train_config": ckpt.extra.get("train_config") or {},
        "weights": "fp32",
    }  # fmt: skip
    with atomic_output(onnx_path) as tmp:
        _export_graph(model, config.arch, tmp, example)
        _set_metadata(tmp, metadata)
    logging.info(f"exported {checkpoint} ({config.name}, {metadata['num_params']:,} parameters) to {onnx_path}")
    return read_metadata(onnx_path)


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader over ``(features, lengths)`` batches (real cuts)."""

    def __init__(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        return {"features": batch[0].numpy().astype(np.float32), "lengths": batch[1].numpy().astype(np.int64)}


def quantize_int8(fp32_path: Path | str, int8_path: Path | str, mode: str = "static",
                  calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, Any]:  # fmt: skip
    """int8 weights for an exported fp32 model (onnxruntime.quantization; written atomically).

    ``mode="static"``: weights and activations of the MatMul/Conv/Gemm layers in int8 (QOperator
    format, per-channel weights: faster than QDQ on one CPU thread), activation ranges calibrated (min-max) on ``calibration``, a few
    ``(features, lengths)`` batches of real cuts; ``mode="dynamic"``: int8 weights, activation ranges
    computed per batch at run time (no calibration). Returns the stored metadata.

    Static weights use 7 bits (``reduce_range``): on x86 CPUs without VNNI (AVX2 only) onnxruntime's
    u8s8 kernels sum pairs of products in saturating int16 (``vpmaddubsw``), and full-range 8-bit weights
    overflow it. Measured on an AVX2-only AMD EPYC: max |delta logit| 1.32 with 8 bits, 0.227 with 7
    (tests/deploy/test_onnx_export.py).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    meta = read_metadata(fp32_path)
    if meta["weights"] != "fp32":
        raise OnnxModelError(f"{fp32_path} already has {meta['weights']} weights: quantize the fp32 export")
    if mode not in ("static", "dynamic"):
        raise ValueError(f"int8 mode must be 'static' or 'dynamic', got {mode!r}")
    with atomic_output(int8_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "static":
            if not calibration:
                raise ValueError("static int8 quantization needs calibration batches of real cuts")
            quantize_static(str(fp32_path), str(tmp), _CalibrationReader(calibration), quant_format=QuantFormat.QOperator,
                            per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            op_types_to_quantize=["MatMul", "Conv", "Gemm"],
                            calibrate_method=CalibrationMethod.MinMax)  # fmt: skip
        else:
            quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])  # fmt: skip
        _set_metadata(tmp, {**meta, "model_config": meta["model_config"].to_dict(), "weights": f"int8-{mode}"})
    logging.info(f"{mode} int8 quantization of {fp32_path} written to {int8_path}")
    return read_metadata(int8_path)


@dataclass
class OnnxAcousticModel:
    """An exported model in an onnxruntime session, called like the torch model (module docstring)."""

    path: Path  # the .onnx file
    session: Any  # onnxruntime.InferenceSession
    model_config: ModelConfig  # of the source checkpoint
    num_params: int  # parameters of the source checkpoint
    metadata: dict[str, Any]  # read_metadata of the file

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, F)`` float32 features, ``(B,)`` lengths -> ``(B, T, P)`` float32 logits (CPU tensors)."""
        inputs = {"features": features.detach().to("cpu", torch.float32).numpy(),
                  "lengths": lengths.detach().to("cpu", torch.int64).numpy()}  # fmt: skip
        (logits,) = self.session.run([OUTPUT_NAME], inputs)
        return torch.from_numpy(logits).to(features.device)


def open_onnx(path: Path | str, threads: int = 0) -> OnnxAcousticModel:
    """An exported model in an onnxruntime CPU session with ``threads`` intra-op threads (0: onnxruntime's
    default). Raises OnnxModelError naming the file when it is not a usable asr-kd ONNX model."""
    import onnxruntime as ort

    path = Path(path)
    meta = read_metadata(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
        raise OnnxModelError(f"{path}: onnxruntime cannot load it ({type(error).__name__}: "
                             f"{str(error).strip()[:300]})") from error  # fmt: skip
    names = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    if names != INPUT_NAMES or outputs != (OUTPUT_NAME,):
        raise OnnxModelError(f"{path}: inputs {names} and outputs {outputs}, expected {INPUT_NAMES} and "
                             f"({OUTPUT_NAME!r},)")  # fmt: skip
    declared = session.get_outputs()[0].shape[-1]
    if isinstance(declared, int) and declared != meta["model_config"].num_pdfs:
        raise OnnxModelError(f"{path}: the graph has {declared} outputs per frame but its metadata says num_pdfs "
                             f"{meta['model_config'].num_pdfs}")  # fmt: skip
    return OnnxAcousticModel(path, session, meta["model_config"], int(meta["num_params"]), meta)


@dataclass
class ModelFile:
    """What decoding needs to know of a model file, checkpoint or ONNX (see :func:`describe_model_file`)."""

    path: Path
    model_config: ModelConfig
    num_params: int
    train_config: dict[str, Any]  # the trainer's resolved config ({} when unknown)
    sha256: str  # of the file's bytes
    weights: str  # "torch" for a checkpoint, else the ONNX weight type


def describe_model_file(path: Path | str) -> ModelFile:
    """The model config, parameter count, train config and hash of a checkpoint or an ONNX file."""
    path = Path(path)
    if is_onnx_path(path):
        meta = read_metadata(path)
        return ModelFile(path, meta["model_config"], int(meta["num_params"]), meta["train_config"] or {},
                         file_sha256(path), meta["weights"])  # fmt: skip
    ckpt = load_checkpoint(path)
    train_config = ckpt.extra.get("train_config") or {}
    return ModelFile(path, ckpt.model_config, ckpt.num_params, train_config, file_sha256(path), "torch")


def open_model_file(path: Path | str, device: torch.device | str = "cpu", threads: int = 0):
    """A checkpoint (torch module on ``device``, eval mode) or an ONNX file (:class:`OnnxAcousticModel`, CPU,
    ``threads`` intra-op threads): either is called ``model(features, lengths) -> logits``."""
    if is_onnx_path(path):
        return open_onnx(path, threads=threads)
    return model_from_checkpoint(load_checkpoint(path), device)


def num_parameters(model) -> int:
    """Parameters of a torch module or of the checkpoint an ONNX model was exported from."""
    if isinstance(model, OnnxAcousticModel):
        return model.num_params
    return sum(p.numel() for p in model.parameters())


def check_num_pdfs(path: Path | str, model_num_pdfs: int, lang_num_pdfs: int, lang_dir: Path | str) -> None:
    """Raise ValueError naming ``path`` when its model does not have one output per pdf of the lang dir."""
    if model_num_pdfs != lang_num_pdfs:
        raise ValueError(f"{path} has {model_num_pdfs} outputs (num_pdfs) but {lang_dir} has {lang_num_pdfs} pdfs: "
                         "the model was trained for another lang directory")  # fmt: skip


@dataclass(frozen=True)
class LogitComparison:
    """An exported model against the reference's logits on the same batches (valid frames only)."""

    max_abs_diff: float  # max |logit_reference - logit_exported|
    argmax_agreement: float  # share of frames whose arg-max pdf is the same
    frames: int  # frames compared


@torch.no_grad()
def reference_logits(reference: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
                     ) -> list[torch.Tensor]:  # fmt: skip
    """The reference model's logits of each ``(features, lengths)`` batch, computed once for every comparison."""
    return [reference(features, lengths) for features, lengths in batches]


@torch.no_grad()
def compare_logits(reference: Sequence[torch.Tensor], exported: OnnxAcousticModel,
                   batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> LogitComparison:  # fmt: skip
    """One forward pass of ``exported`` over ``batches`` against ``reference`` (``reference_logits`` of the
    same batches): the largest |delta logit| and the arg-max agreement over the valid frames."""
    if len(reference) != len(batches):
        raise ValueError(f"{len(reference)} reference logit batches for {len(batches)} batches")
    worst, same, frames = 0.0, 0, 0
    for a, (features, lengths) in zip(reference, batches):
        b = exported(features, lengths)
        for i, n in enumerate(lengths.tolist()):
            worst = max(worst, float((a[i, :n] - b[i, :n]).abs().max()))
            same += int((a[i, :n].argmax(-1) == b[i, :n].argmax(-1)).sum())
            frames += n
    return LogitComparison(worst, same / max(frames, 1), frames)
