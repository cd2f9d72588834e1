"""The model configuration: everything needed to rebuild an acoustic model (checkpoints hold it as a
plain dict). Which ``arch``/``size``/``overrides`` exist is checked by :mod:`asr_kd.models.factory`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class ModelConfig:
    """One acoustic model: a family, a named size of it, and the task's dimensions."""

    arch: str  # model family: "dnn" | "tdnn" | "blstm" | "conformer"
    size: str  # named size of the family, e.g. "teacher", "student" (factory.SIZE_NAMES)
    num_pdfs: int  # output classes: HMM-state pdf ids from the lang stage
    feature_dim: int = 80  # input features per frame (fbank bins)
    dropout: float = 0.1  # dropout probability in the hidden layers
    overrides: dict[str, Any] = field(default_factory=dict)  # family hyper-parameters replacing the size's

    def __post_init__(self) -> None:
        for name in ("arch", "size"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"model {name} must be a string, got {getattr(self, name)!r}")
        for name in ("num_pdfs", "feature_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model {name} must be an integer >= 1, got {value!r}")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, (int, float))
            or not 0 <= self.dropout < 1
        ):
            raise ValueError(f"model dropout must be a number in [0, 1), got {self.dropout!r}")
        if not isinstance(self.overrides, dict) or not all(isinstance(k, str) for k in self.overrides):
            raise ValueError(f"model overrides must be a dict with string keys, got {self.overrides!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-able; what checkpoints store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys are errors naming them."""
        if not isinstance(config, dict):
            raise ValueError(f"model config must be a dict, got {type(config).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise ValueError(f"unknown model config field(s) {unknown}; expected some of {names}")
        missing = [n for n in ("arch", "size", "num_pdfs") if n not in config]
        if missing:
            raise ValueError(f"model config lacks required field(s) {missing}")
        return cls(**config)

    @property
    def name(self) -> str:
        """``arch/size``, e.g. ``dnn/teacher`` (``+overrides`` when there are any)."""
        return f"{self.arch}/{self.size}" + ("+overrides" if self.overrides else "")
