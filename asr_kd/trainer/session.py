"""One rank's training session: model, optimizer, data, counters; cross-rank sums of batch statistics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
from torch import nn

from asr_kd.guard import check_skipped_share
from asr_kd.trainer.config import TrainConfig
from asr_kd.trainer.data import DUPLICATE_ID, FrameDataModule
from asr_kd.trainer.state import save_train_state
from asr_kd.utils import write_text

LossFn = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]  # (logits, batch) -> (loss, stats)


@dataclass
class Session:
    """Everything one rank's training loop works on."""

    cfg: TrainConfig
    rank: int
    world_size: int
    device: torch.device
    model: nn.Module  # DDP-wrapped under DDP
    module: nn.Module  # the bare model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data: FrameDataModule
    loss_fn: LossFn
    writer: Any  # tensorboard SummaryWriter on rank 0, else None
    total_steps: int
    step: int = 0  # optimizer steps done
    best_valid_acc: float = -1.0
    best_epoch: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # training cuts left out: cut id -> reason
    valid_skipped: dict[str, str] = field(default_factory=dict)  # validation cuts left out

    def note_skipped(self, skipped: Mapping[str, str], what: str = "training") -> None:
        """Count and log (once per cut) the cuts a batch left out (non-finite features)."""
        seen = self.skipped if what == "training" else self.valid_skipped
        for cut_id, reason in skipped.items():
            if cut_id not in seen:
                seen[cut_id] = reason
                logging.warning(f"{what} cut {cut_id} skipped ({reason}); {len(seen)} {what} cut(s) skipped so far")

    def all_skipped(self, what: str = "training") -> dict[str, str]:
        """The ``what`` cuts left out so far by every rank (lhotse's ``_dup<k>`` copies counted as their cut).
        Collective under DDP."""
        seen = dict(self.skipped if what == "training" else self.valid_skipped)
        if self.world_size > 1:
            per_rank: list[Any] = [None] * self.world_size
            dist.all_gather_object(per_rank, seen)
            seen = {k: v for d in per_rank for k, v in d.items()}
        return {DUPLICATE_ID.sub("", k): v for k, v in sorted(seen.items())}

    def check_skipped(self, what: str = "training") -> dict[str, str]:
        """Count the ``what`` cuts skipped so far (every rank's) in the log, list them in
        ``<exp_dir>/skipped_<what>.txt`` (``cut id<TAB>reason``; rank 0 writes it) and raise
        ``TooManySkippedError`` on every rank when they are more than ``cfg.max_skipped_share`` of the
        ``what`` cuts. Collective under DDP. Returns the skipped cuts."""
        skipped = self.all_skipped(what)
        if what == "training":
            total, source = self.data.num_train_cuts(), self.cfg.data.train_cuts
        else:
            total, source = len(self.data.valid_cuts()), self.cfg.data.valid_cuts
        path = self.exp_dir / f"skipped_{what}.txt"
        if self.rank == 0:
            write_text(path, "".join(f"{k}\t{v}\n" for k, v in skipped.items()))
        if skipped:
            logging.warning(f"step {self.step}: {len(skipped)} of {total} {what} cuts skipped "
                            f"({len(skipped) / max(total, 1):.1%}; max_skipped_share {self.cfg.max_skipped_share}), "
                            f"listed in {path}")  # fmt: skip
        check_skipped_share(len(skipped), total, self.cfg.max_skipped_share,
                            f"{what} cuts of {source} (skip list {path})")  # fmt: skip
        return skipped

    @property
    def exp_dir(self) -> Path:
        return Path(self.cfg.exp_dir)

    def state(self, next_epoch: int, next_batch: int) -> dict:
        """The loop's counters; (next_epoch, next_batch) is where a resumed run starts. Collective under
        DDP: ``skipped`` holds the training cuts every rank left out (rank 0 writes the state)."""
        return {"epoch": next_epoch, "batch_idx": next_batch, "step": self.step, "total_steps": self.total_steps,
                "best_valid_acc": self.best_valid_acc, "best_epoch": self.best_epoch,
                "skipped": self.all_skipped("training")}  # fmt: skip

    def save(self, names: list[str], next_epoch: int, next_batch: int) -> None:
        """Collective: every rank must call it (RNG states and skipped cuts of all ranks are gathered)."""
        save_train_state(self.exp_dir, names, self.module, self.cfg, self.optimizer, self.scheduler,
                         self.state(next_epoch, next_batch), self.rank, self.world_size)

    def scalars(self, prefix: str, values: Mapping[str, float]) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, self.step)


def all_reduce_sums(values: dict[str, torch.Tensor], world_size: int) -> dict[str, float]:
    """Sum each statistic over the ranks (float64)."""
    names = sorted(values)
    flat = torch.stack([torch.as_tensor(values[k], dtype=torch.float64) for k in names])
    if world_size > 1:
        flat = flat.to(next(iter(values.values())).device)
        dist.all_reduce(flat)
    return dict(zip(names, flat.tolist()))


FRAMES_SUFFIX = "_frames"  # a statistic "<name>_frames" counts the frames that the sum "<name>" is over


def raise_on_any_rank(error: str | None, world_size: int, device: torch.device,
                      exc_type: type[Exception] = FloatingPointError) -> None:  # fmt: skip
    """Raise ``exc_type`` on every rank when any rank has an ``error`` (None: none on this rank).

    Collective under DDP (every rank must call it): one rank raising alone would leave the others waiting
    in their next collective for ever. A flag is summed over the ranks; only when it is set are the
    messages gathered, so that every rank raises with all of them (``rank <r>: <message>``).
    """
    if world_size > 1:
        flag = torch.tensor([int(error is not None)], dtype=torch.int64, device=device)
        dist.all_reduce(flag)
        if int(flag.item()) == 0:
            return
        errors: list[Any] = [None] * world_size
        dist.all_gather_object(errors, error)
        raise exc_type("; ".join(f"rank {r}: {e}" for r, e in enumerate(errors) if e is not None))
    if error is not None:
        raise exc_type(error)


def per_frame(sums: Mapping[str, float]) -> dict[str, float]:
    """Sums over frames -> averages; "correct" becomes "frame_acc"; "frames" stays the count.

    A sum is divided by the labeled frames ("frames"), or by its own count "<name>_frames" when the sums
    hold one (the KL of a transfer set covers the unlabeled frames too); the counts stay counts.
    """
    out = {}
    for k, v in sums.items():
        if k == "frames" or k.endswith(FRAMES_SUFFIX):
            out[k] = v
        else:
            count = sums.get(k + FRAMES_SUFFIX, sums.get("frames", 0.0))
            out["frame_acc" if k == "correct" else k] = v / max(count, 1.0)
    return {**out, "frames": sums.get("frames", 0.0)}
