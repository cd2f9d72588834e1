"""Map a :class:`ModelConfig` to an acoustic model; named sizes; parameter counts.

Every model maps ``x: (B, T, F)`` fbank frames with ``lengths: (B,)`` to per-frame logits
``(B, T, num_pdfs)`` (same T). Named sizes exist for every family; the CPU sizes train in minutes on
two cores, the ``-xl`` sizes are for a GPU:

=============  ======================================================================
size           use
=============  ======================================================================
student-small  the smallest student (about 0.1-0.2 M parameters)
student        default student (about 0.3-0.5 M), >= 4x smaller than ``teacher``
teacher        default teacher (about 2-2.5 M)
teacher-large  a larger CPU-trainable teacher (about 8-9 M)
student-xl     student of ``teacher-xl`` (about 4-7 M), >= 4x smaller
teacher-xl     GPU teacher (about 25-35 M)
=============  ======================================================================

``parameter_table(num_pdfs)`` gives the exact counts. Usage::

    model = build_model(ModelConfig(arch="tdnn", size="teacher", num_pdfs=87))
    model = build_model(ModelConfig("dnn", "student", 87, dropout=0.0, overrides={"num_layers": 2}))
    logits = model(feats, feat_lens)  # (B, T, F), (B,) -> (B, T, 87)
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from asr_kd.models.blstm import BLSTM, BLSTM_SIZES, BLSTMHparams
from asr_kd.models.config import ModelConfig
from asr_kd.models.conformer import CONFORMER_SIZES, ConformerAM, ConformerHparams
from asr_kd.models.dnn import DNN_SIZES, ContextDNN, DNNHparams
from asr_kd.models.tdnn import TDNN, TDNN_SIZES, TDNNHparams

logger = logging.getLogger(__name__)

SIZE_NAMES = ("student-small", "student", "teacher", "teacher-large", "student-xl", "teacher-xl")


@dataclass(frozen=True)
class _Family:
    module: type[nn.Module]  # built as module(feature_dim=, num_pdfs=, dropout=, **asdict(hparams))
    hparams: type  # frozen dataclass of the family's size-dependent hyper-parameters
    sizes: dict[str, Any]  # size name -> hparams instance


FAMILIES: dict[str, _Family] = {
    "dnn": _Family(ContextDNN, DNNHparams, DNN_SIZES),
    "tdnn": _Family(TDNN, TDNNHparams, TDNN_SIZES),
    "blstm": _Family(BLSTM, BLSTMHparams, BLSTM_SIZES),
    "conformer": _Family(ConformerAM, ConformerHparams, CONFORMER_SIZES),
}
ARCHS = tuple(FAMILIES)


def _checked_override(arch: str, name: str, value: Any, default: Any) -> Any:
    """``value`` for hyper-parameter ``name`` (lists become tuples), if its type matches ``default``'s."""
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        value = tuple(value)
    expected = (int, float) if isinstance(default, float) else type(default)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and not isinstance(default, bool))
    if isinstance(default, tuple):
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ValueError(
            f"model overrides[{name!r}] for arch {arch!r} must be a {type(default).__name__} "
            f"like {default!r}, got {value!r}"
        )
    return value


def resolve_hparams(config: ModelConfig) -> Any:
    """The family hyper-parameters of ``config``: its named size with ``config.overrides`` applied.

    Raises ValueError naming the field (arch, size or the override) and the accepted values.
    """
    family = FAMILIES.get(config.arch)
    if family is None:
        raise ValueError(f"model arch must be one of {list(ARCHS)}, got {config.arch!r}")
    base = family.sizes.get(config.size)
    if base is None:
        raise ValueError(
            f"model size must be one of {list(family.sizes)} (arch {config.arch!r}), got {config.size!r}"
        )
    names = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(config.overrides) - set(names))
    if unknown:
        raise ValueError(
            f"model overrides {unknown} are not hyper-parameters of arch {config.arch!r}; expected {names}"
        )
    changes = {k: _checked_override(config.arch, k, v, getattr(base, k)) for k, v in config.overrides.items()}
    return dataclasses.replace(base, **changes)


def _instantiate(config: ModelConfig) -> tuple[nn.Module, Any]:
    """The one builder: (freshly initialised model, resolved hyper-parameters)."""
    hparams = resolve_hparams(config)
    model = FAMILIES[config.arch].module(
        feature_dim=config.feature_dim,
        num_pdfs=config.num_pdfs,
        dropout=float(config.dropout),
        **dataclasses.asdict(hparams),
    )
    return model, hparams


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model for ``config`` (on the current default device); logs its size."""
    model, hparams = _instantiate(config)
    logger.info("built %s %s: %s parameters", config.name, hparams, f"{count_parameters(model):,}")
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``; wrappers (DDP, torch.compile) count the same."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def state_dict_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the state dict a model of ``config`` has (built on the meta device)."""
    with torch.device("meta"):
        model, _ = _instantiate(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def parameter_counts(num_pdfs: int, feature_dim: int = 80) -> dict[str, dict[str, int]]:
    """``counts[arch][size]`` for every named size (built on the meta device: no memory, fast)."""
    counts: dict[str, dict[str, int]] = {}
    with torch.device("meta"):
        for arch, family in FAMILIES.items():
            counts[arch] = {
                size: count_parameters(_instantiate(ModelConfig(arch, size, num_pdfs, feature_dim))[0])
                for size in family.sizes
            }
    return counts


def parameter_table(num_pdfs: int, feature_dim: int = 80) -> str:
    """Markdown table of parameter counts (millions), one row per arch, one column per named size."""
    counts = parameter_counts(num_pdfs, feature_dim)
    lines = ["| arch | " + " | ".join(SIZE_NAMES) + " |", "|---|" + "---:|" * len(SIZE_NAMES)]
    for arch, by_size in counts.items():
        lines.append(f"| {arch} | " + " | ".join(f"{by_size[s] / 1e6:.2f} M" for s in SIZE_NAMES) + " |")
    return "\n".join(lines)
