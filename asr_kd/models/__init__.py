"""Frame-level acoustic models (per-frame logits over HMM-state pdf ids), their factory and the
toolkit's one checkpoint format. See :mod:`asr_kd.models.factory` for the named sizes."""

from asr_kd.models.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_hash,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from asr_kd.models.config import ModelConfig
from asr_kd.models.factory import (
    ARCHS,
    SIZE_NAMES,
    blstm_student,
    blstm_teacher,
    build_model,
    conformer_student,
    conformer_teacher,
    count_parameters,
    dnn_student,
    dnn_teacher,
    parameter_counts,
    parameter_table,
    resolve_hparams,
    tdnn_student,
    tdnn_teacher,
)

__all__ = [
    "ARCHS",
    "SIZE_NAMES",
    "Checkpoint",
    "CheckpointError",
    "ModelConfig",
    "blstm_student",
    "blstm_teacher",
    "build_model",
    "checkpoint_hash",
    "conformer_student",
    "conformer_teacher",
    "count_parameters",
    "dnn_student",
    "dnn_teacher",
    "load_checkpoint",
    "load_model",
    "parameter_counts",
    "parameter_table",
    "resolve_hparams",
    "save_checkpoint",
    "tdnn_student",
    "tdnn_teacher",
]
