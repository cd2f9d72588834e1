"""Frame-level acoustic models (per-frame logits over HMM-state pdf ids), their factory and the
toolkit's one checkpoint format. See :mod:`asr_kd.models.factory` for the named sizes."""

from asr_kd.models.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_hash,
    load_checkpoint,
    load_model,
    load_models,
    model_from_checkpoint,
    save_checkpoint,
)
from asr_kd.models.config import ModelConfig
from asr_kd.models.factory import (
    ARCHS,
    SIZE_NAMES,
    build_model,
    count_parameters,
    parameter_counts,
    parameter_table,
    resolve_hparams,
)

__all__ = [
    "ARCHS", "SIZE_NAMES", "Checkpoint", "CheckpointError", "ModelConfig", "build_model", "checkpoint_hash",
    "count_parameters", "load_checkpoint", "load_model", "load_models", "model_from_checkpoint", "parameter_counts",
    "parameter_table", "resolve_hparams", "save_checkpoint",
]  # fmt: skip
