"""asr-kd: ensemble-to-single knowledge distillation of frame-level acoustic models."""

__version__ = "0.1.0"
