"""Learning-rate schedule: linear warm-up, then cosine / linear decay or constant (a LambdaLR factor)."""

from __future__ import annotations

import math
from dataclasses import dataclass

DECAYS = ("cosine", "linear", "constant")


@dataclass
class WarmupDecay:
    """``lr(step) = peak * self(step)``; a picklable callable, so ``LambdaLR.state_dict`` keeps its fields."""

    warmup_steps: int  # linear warm-up steps (0: none)
    total_steps: int  # the decay ends at this step and stays at min_ratio after it
    decay: str = "cosine"  # "cosine", "linear" or "constant"
    min_ratio: float = 0.0  # final factor of the cosine / linear decay

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"lr_decay must be one of {DECAYS}, got {self.decay!r}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.decay == "cosine":
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - (1 - self.min_ratio) * progress
