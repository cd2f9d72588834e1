"""The toolkit's one checkpoint format: a ``torch.save`` dict that holds the model config, so a
checkpoint alone rebuilds its model.

Layout (format version 1)::

    {"format": "asr-kd-checkpoint", "version": 1,
     "model_config": ModelConfig.to_dict(),         # plain dict
     "model": state_dict, "num_params": int,
     "asr_kd_version": str, "torch_version": str,
     "extra": {...}}                                 # whatever the trainer passes: optimizer, scheduler,
                                                     # sampler, RNG states, epoch, resolved train config

Files are written atomically (temporary name, then rename) and read with
``torch.load(weights_only=True)``: ``extra`` may hold only tensors, numbers, strings, bytes, None,
torch dtypes/devices/sizes, and lists, tuples, sets and dicts of them; ``save_checkpoint`` checks this
and names the offending entry (convert numpy RNG states with ``.tolist()`` or ``torch.from_numpy``).

Usage::

    save_checkpoint(exp_dir / "epoch-3.pt", model, model_config, {"epoch": 3, "optimizer": opt.state_dict()})
    model, model_config = load_model(exp_dir / "epoch-3.pt", device="cuda")   # eval mode
    ckpt = load_checkpoint(exp_dir / "epoch-3.pt")                             # to resume: ckpt.extra
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

import asr_kd
from asr_kd.models.config import ModelConfig
from asr_kd.models.factory import build_model, count_parameters, resolve_hparams, state_dict_shapes
from asr_kd.utils import atomic_output, file_sha256

CHECKPOINT_FORMAT = "asr-kd-checkpoint"
CHECKPOINT_VERSION = 1
_ATOM_TYPES = (int, float, bool, str, bytes, complex, type(None), torch.dtype, torch.device, torch.Size)
_CONTAINER_TYPES = (dict, collections.OrderedDict, list, tuple, set)


class CheckpointError(ValueError):
    """A file that is not a usable asr-kd checkpoint; the message names the file."""


@dataclass
class Checkpoint:
    """A loaded, validated checkpoint (tensors on the ``map_location`` it was loaded with)."""

    path: Path  # the file it was read from
    model_config: ModelConfig  # rebuilds the model with build_model
    state_dict: dict[str, torch.Tensor]  # the model's weights and buffers
    extra: dict[str, Any]  # what the trainer stored (optimizer, epoch, ...)
    num_params: int  # parameter count of the model
    asr_kd_version: str  # package version that wrote it
    torch_version: str  # torch version that wrote it


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _check_storable(obj: Any, where: str) -> None:
    """Raise TypeError naming ``where`` if ``obj`` holds anything ``torch.load(weights_only=True)``
    would refuse."""
    if isinstance(obj, torch.Tensor) or type(obj) in _ATOM_TYPES:
        return
    if type(obj) in _CONTAINER_TYPES:
        if isinstance(obj, dict):
            for key, value in obj.items():
                _check_storable(key, f"{where} key {key!r}")
                _check_storable(value, f"{where}[{key!r}]")
        else:
            for i, value in enumerate(obj):
                _check_storable(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a checkpoint holds only tensors, "
        "numbers, strings, bytes, None, torch dtypes/devices and lists/tuples/sets/dicts of them "
        "(what torch.load(weights_only=True) reads): convert it (numpy -> torch.from_numpy or .tolist(), "
        "dataclass -> dataclasses.asdict)"
    )


def save_checkpoint(
    path: Path | str, model: nn.Module, model_config: ModelConfig, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights, ``model_config`` and ``extra`` to ``path`` atomically.

    Raises ValueError when ``model`` does not have the state dict ``model_config`` builds (so no
    checkpoint is written that cannot be loaded), TypeError naming an ``extra`` entry that cannot be
    stored. Returns ``path``.
    """
    path = Path(path)
    model = unwrap_model(model)
    config_dict = model_config.to_dict()
    _check_storable(config_dict, "model_config")
    extra = dict(extra or {})
    _check_storable(extra, "extra")
    state_dict = model.state_dict()
    got = {name: tuple(t.shape) for name, t in state_dict.items()}
    expected = state_dict_shapes(model_config)
    if got != expected:
        diff = sorted(set(got.items()) ^ set(expected.items()))[:4]
        raise ValueError(
            f"cannot save {path}: the model's state dict does not match model_config {model_config.name} "
            f"(first differences, name and shape: {diff})"
        )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": config_dict,
        "model": state_dict,
        "num_params": count_parameters(model),
        "asr_kd_version": asr_kd.__version__,
        "torch_version": str(torch.__version__),  # a str subclass that weights_only refuses
        "extra": extra,
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def load_checkpoint(path: Path | str, map_location: torch.device | str = "cpu") -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save_checkpoint`.

    Raises FileNotFoundError, or CheckpointError naming the file when it is not an asr-kd checkpoint,
    was written by a newer format version, or holds an invalid model config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for foreign files
        raise CheckpointError(
            f"{path} is not an asr-kd checkpoint: torch.load failed ({_first_line(error)})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = (
            f"keys {sorted(map(str, payload))[:8]}" if isinstance(payload, dict) else type(payload).__name__
        )
        raise CheckpointError(
            f"{path} is not an asr-kd checkpoint: expected a dict with format={CHECKPOINT_FORMAT!r}, "
            f"found {found}"
        )
    version = payload.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this asr-kd reads <= {CHECKPOINT_VERSION}"
        )
    missing = [k for k in ("model_config", "model", "extra") if k not in payload]
    if missing:
        raise CheckpointError(f"{path} is a truncated asr-kd checkpoint: it lacks {missing}")
    try:
        model_config = ModelConfig.from_dict(payload["model_config"])
        resolve_hparams(model_config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds an invalid model config: {error}") from error
    return Checkpoint(
        path=path,
        model_config=model_config,
        state_dict=payload["model"],
        extra=payload["extra"],
        num_params=int(payload.get("num_params", -1)),
        asr_kd_version=str(payload.get("asr_kd_version", "?")),
        torch_version=str(payload.get("torch_version", "?")),
    )


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model of a checkpoint from the file alone: (model on ``device`` in eval mode, config).

    Raises CheckpointError naming the file (see :func:`load_checkpoint`), also when the weights do not
    fit the stored config.
    """
    checkpoint = load_checkpoint(path, map_location="cpu")
    return model_from_checkpoint(checkpoint, device), checkpoint.model_config


def model_from_checkpoint(checkpoint: Checkpoint, device: torch.device | str = "cpu") -> nn.Module:
    """The model of an already loaded checkpoint, on ``device`` in eval mode (see :func:`load_model`)."""
    model = build_model(checkpoint.model_config)
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as error:
        raise CheckpointError(
            f"{checkpoint.path}: weights do not fit its model config {checkpoint.model_config.name}: "
            f"{' '.join(str(error).split())[:600]}"
        ) from error
    return model.to(device).eval()


def load_models(paths: Sequence[Path | str], device: torch.device | str = "cpu") -> list[nn.Module]:
    """Every checkpoint of ``paths`` rebuilt on ``device`` in eval mode (see :func:`load_model`)."""
    if not paths:
        raise ValueError("no model checkpoints given")
    return [load_model(p, device=device)[0] for p in paths]


def checkpoint_hash(path: Path | str) -> str:
    """Hex SHA-256 of the checkpoint file's bytes (identifies the teachers in soft-target caches)."""
    return file_sha256(path)
