"""Frame-level training shared by teachers and students: CE on forced-alignment pdf ids (or a plugged loss).

Usage::

    from asr_kd.datamodule import DataConfig
    from asr_kd.models import ModelConfig
    from asr_kd.train import TrainConfig, train

    train(TrainConfig(exp_dir="exp/synth_digits/teacher-0", seed=1,
                      model=ModelConfig(arch="tdnn", size="teacher", num_pdfs=87),
                      data=DataConfig(train_cuts="data/ali/synth_digits_cuts_train.jsonl.gz",
                                      valid_cuts="data/ali/synth_digits_cuts_dev.jsonl.gz")))
    # several processes / GPUs: start the script or command that calls train() with torchrun
    #   torchrun --nproc_per_node 4 my_train.py    (train() reads RANK / WORLD_SIZE / LOCAL_RANK)
    # or train(cfg, world_size=2) spawns the local processes itself (gloo on CPU, nccl on CUDA).

The experiment directory::

    exp_dir/config.json            resolved TrainConfig
    exp_dir/log/log-train-<date>   log of rank 0 (other ranks: ...-rank<r>)
    exp_dir/tensorboard/           train/valid curves
    exp_dir/last.pt                latest resumable state (every save_every_n steps and every epoch end)
    exp_dir/epoch-<n>.pt           resumable state after epoch n (epoch-<num_epochs>.pt: the final model)
    exp_dir/best-valid-acc.pt      model with the best validation frame accuracy
    exp_dir/done                   JSON summary, written last: a re-run with the same config does nothing

An interrupted run (killed, or stopped by ``max_steps``) continues from ``last.pt``: same weights,
optimizer, scheduler, RNG states (every rank's) and position in the epoch's batch sequence, so on CPU the
result is bit-identical to an uninterrupted run (with DataLoader workers too: SpecAugment is seeded per
batch). On CUDA it is as close as CUDA's own run-to-run nondeterminism allows.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from asr_kd.datamodule import IGNORE_INDEX, DataConfig, ExtraField, FrameDataModule, ignore_duplicates
from asr_kd.models import ModelConfig, build_model
from asr_kd.trainer.checkpoint import load_train_state, read_done, restore_rng_state, save_model_checkpoint, write_done
from asr_kd.trainer.logs import log_to_file
from asr_kd.trainer.session import LossFn, Session, all_reduce_sums, per_frame
from asr_kd.trainer.schedule import WarmupDecay
from asr_kd.utils import fix_random_seed, resolve_device, write_json


@dataclass
class TrainConfig:
    exp_dir: str = "exp/synth_digits/teacher-0"  # experiment directory (layout in the module docstring)
    model: ModelConfig | None = None  # the model zoo's config (arch, size, num_pdfs, ...); required
    data: DataConfig = field(default_factory=DataConfig)  # cuts, batch size, workers, SpecAugment
    num_epochs: int = 10  # passes over the training cuts
    lr: float = 1e-3  # peak learning rate of AdamW
    warmup_steps: int = 500  # linear warm-up from ~0 to lr, in optimizer steps
    lr_decay: str = "cosine"  # after warm-up: "cosine", "linear" or "constant"
    min_lr_ratio: float = 0.05  # final lr = lr * min_lr_ratio (cosine / linear decay)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    grad_clip: float = 5.0  # max global gradient norm (0: no clipping)
    seed: int = 42  # model init, data order, SpecAugment, dropout
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda"; under DDP each rank takes cuda:LOCAL_RANK
    bf16: bool = True  # bf16 autocast of the forward pass on CUDA (ignored on CPU); loss in float32
    log_interval: int = 50  # optimizer steps between log lines / tensorboard points
    valid_interval: int = 0  # optimizer steps between extra mid-epoch validations (0: epoch ends only)
    save_every_n: int = 500  # optimizer steps between resumable checkpoints (0: epoch ends only)
    max_steps: int = 0  # stop resumably after this many optimizer steps in total (0: no limit)

    @classmethod
    def from_dict(cls, config: dict) -> "TrainConfig":
        """Inverse of ``dataclasses.asdict`` (config.json, a checkpoint's train_config); unknown keys are errors."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"unknown train config field(s) {unknown}; expected some of {sorted(names)}")
        values = dict(config)
        if isinstance(values.get("data"), dict):
            data_names = {f.name for f in fields(DataConfig)}
            bad = sorted(set(values["data"]) - data_names)
            if bad:
                raise ValueError(f"unknown data config field(s) {bad}; expected some of {sorted(data_names)}")
            values["data"] = DataConfig(**values["data"])
        if isinstance(values.get("model"), dict):
            values["model"] = ModelConfig.from_dict(values["model"])
        return cls(**values)


# fields that may change between a run and its resumption without changing what it computes
RUNTIME_FIELDS = ("exp_dir", "device", "log_interval", "save_every_n", "max_steps", "valid_interval",
                  "data.num_workers")  # fmt: skip


def cross_entropy_loss(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean CE over non-padding frames. logits: (B, T, C); batch["frame_labels"]: (B, T), -100 = padding.

    The contract of every ``loss_fn``: returns (mean loss over non-padding frames, stats), where stats
    maps names to *sums* over the batch's frames (divided by the frame count when logged).
    """
    labels = batch["frame_labels"]
    total = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")  # fmt: skip
    frames = (labels != IGNORE_INDEX).sum()
    return total / frames.clamp(min=1), {"ce": total.detach()}


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors in ``obj`` (nested dicts / lists / tuples: extra fields too) moved to ``device``."""
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def compute_loss(model: nn.Module, batch: dict, device: torch.device, loss_fn: LossFn = cross_entropy_loss,
                 bf16: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
    """Forward ``batch`` and apply ``loss_fn``. Returns (loss, stats with "loss", "frames", "correct" sums).

    ``model(features (B, T, F), lengths (B,)) -> logits (B, T, C)``; bf16 autocast only on CUDA.
    """
    batch = to_device(batch, device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
        logits = model(batch["features"], batch["lengths"])
    labels = batch["frame_labels"]
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"model output {tuple(logits.shape)} does not match frame_labels {tuple(labels.shape)}: "
                         "frame-level models must keep one output per input frame")  # fmt: skip
    logits = logits.float()
    loss, stats = loss_fn(logits, batch)
    with torch.no_grad():
        mask = labels != IGNORE_INDEX
        frames = mask.sum()
        correct = ((logits.argmax(-1) == labels) & mask).sum()
    return loss, {**stats, "loss": loss.detach() * frames, "frames": frames, "correct": correct}


def check_labels(batch: dict, num_pdfs: int) -> None:
    """Raise if a (CPU) batch holds a frame label outside [0, num_pdfs) other than the padding value."""
    labels = batch["frame_labels"]
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_pdfs))
    if bad.any():
        row = int(bad.any(1).nonzero()[0])
        raise ValueError(f"cut {batch['cut_ids'][row]} has frame label {int(labels[bad][0])} outside the model's "
                         f"num_pdfs={num_pdfs}: set model.num_pdfs to the lang dir's pdf count")  # fmt: skip


def build_optimizer(model: nn.Module, cfg: TrainConfig, total_steps: int):
    """AdamW (no weight decay on biases and norms) + LambdaLR warm-up then decay over ``total_steps``."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    schedule = WarmupDecay(cfg.warmup_steps, total_steps, cfg.lr_decay, cfg.min_lr_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


@torch.no_grad()
def validate(s: Session) -> dict[str, float]:
    """Frame accuracy and CE on the validation cuts (CE for every model, so all runs compare)."""
    if s.world_size > 1:  # DDP syncs buffers (BatchNorm statistics) from rank 0 only at the next forward
        for buffer in s.module.buffers():
            dist.broadcast(buffer, 0)
    s.module.eval()
    sums: dict[str, torch.Tensor] = {}
    for batch in s.data.valid_dataloader():
        check_labels(batch, s.cfg.model.num_pdfs)
        ignore_duplicates(batch)
        _, stats = compute_loss(s.module, batch, s.device, cross_entropy_loss, s.cfg.bf16)
        for k, v in stats.items():
            sums[k] = sums.get(k, 0) + v.double()
    s.module.train()
    result = per_frame(all_reduce_sums(sums, s.world_size)) if sums else {"loss": math.nan, "frame_acc": 0.0}
    logging.info(f"step {s.step}: valid loss {result['loss']:.4f}, frame accuracy {result['frame_acc']:.4f} "
                 f"({int(result.get('frames', 0))} frames)")  # fmt: skip
    s.scalars("valid", {"loss": result["loss"], "frame_acc": result["frame_acc"]})
    return result


def _maybe_best(s: Session, result: dict[str, float], epoch: int) -> None:
    if result["frame_acc"] > s.best_valid_acc:
        s.best_valid_acc, s.best_epoch = result["frame_acc"], epoch
        if s.rank == 0:
            save_model_checkpoint(s.exp_dir / "best-valid-acc.pt", s.module, s.cfg,
                                  {"valid": result, "epoch": epoch, "step": s.step})  # fmt: skip


class ProgressBar(tqdm):
    """tqdm without its monitor thread: DataLoader workers are forked while the bar lives."""

    monitor_interval = 0


def train_one_epoch(s: Session, epoch: int, skip_batches: int = 0) -> bool:
    """Train ``epoch`` from its batch ``skip_batches``; False when stopped early by ``max_steps``."""
    cfg = s.cfg
    s.model.train()
    loader = s.data.train_dataloader(epoch, skip_batches)
    batch_idx = skip_batches
    window: dict[str, torch.Tensor] = {}
    t0 = time.perf_counter()
    bar = ProgressBar(loader, desc=f"epoch {epoch}", unit="batch", initial=skip_batches, disable=s.rank != 0,
                      total=s.total_steps // max(cfg.num_epochs, 1), dynamic_ncols=True)  # fmt: skip
    for batch in bar:
        check_labels(batch, cfg.model.num_pdfs)
        loss, stats = compute_loss(s.model, batch, s.device, s.loss_fn, cfg.bf16)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {s.step}: loss is {loss.item()} on cuts {batch['cut_ids'][:4]}...")
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(s.model.parameters(), cfg.grad_clip or math.inf)
        s.optimizer.step()
        s.scheduler.step()
        s.step += 1
        batch_idx += 1
        for k, v in {**stats, "grad_norm": grad_norm.detach()}.items():
            window[k] = window.get(k, 0) + v.detach().double()
        window["batches"] = window.get("batches", 0) + 1
        if s.step % cfg.log_interval == 0:
            t0 = _log_train(s, window, time.perf_counter() - t0, bar)
            window = {}
        if cfg.valid_interval and s.step % cfg.valid_interval == 0:
            _maybe_best(s, validate(s), epoch)
        stop = cfg.max_steps and s.step >= cfg.max_steps
        if stop or (cfg.save_every_n and s.step % cfg.save_every_n == 0):
            s.save(["last.pt"], epoch, batch_idx)
        if stop:
            logging.info(f"max_steps={cfg.max_steps} reached in epoch {epoch}: stopping (resumable)")
            return False
    return True


def _log_train(s: Session, window: dict[str, torch.Tensor], seconds: float, bar) -> float:
    batches = float(window.pop("batches"))
    grad_norm = float(window.pop("grad_norm")) / batches
    avg = per_frame({k: float(v) for k, v in window.items()})
    fps = avg["frames"] / max(seconds, 1e-9)
    lr = s.scheduler.get_last_lr()[0]
    bar.set_postfix(loss=f"{avg['loss']:.3f}", acc=f"{avg['frame_acc']:.3f}", fps=f"{fps:.0f}")
    logging.info(f"step {s.step}: loss {avg['loss']:.4f}, frame acc {avg['frame_acc']:.4f}, lr {lr:.2e}, "
                 f"grad norm {grad_norm:.2f}, {fps:.0f} frames/s (rank {s.rank})")  # fmt: skip
    s.scalars("train", {**{k: v for k, v in avg.items() if k != "frames"}, "lr": lr, "grad_norm": grad_norm,
                        "frames_per_s": fps * s.world_size})  # fmt: skip
    return time.perf_counter()


def _setup(rank: int, world_size: int, cfg: TrainConfig, device: torch.device, loss_fn: LossFn, extra_fields,
           resume: dict | None) -> Session:  # fmt: skip
    """Build this rank's session, from the resumable checkpoint ``resume`` when there is one."""
    exp_dir = Path(cfg.exp_dir)
    fix_random_seed(cfg.seed)  # same initial weights on every rank
    module = build_model(cfg.model).to(device)
    data = FrameDataModule(cfg.data, seed=cfg.seed, world_size=world_size, rank=rank, extra_fields=extra_fields)
    total_steps = resume["state"]["total_steps"] if resume else cfg.num_epochs * data.num_train_batches(1)
    optimizer, scheduler = build_optimizer(module, cfg, total_steps)
    model = module
    if world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(exp_dir / "tensorboard", purge_step=resume["state"]["step"] if resume else None)
    s = Session(cfg, rank, world_size, device, model, module, optimizer, scheduler, data, loss_fn, writer, total_steps)
    num_params = sum(p.numel() for p in module.parameters())
    logging.info(f"rank {rank}/{world_size} on {device}: {num_params:,} parameters, {total_steps} steps planned")
    if resume:
        module.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        st = resume["state"]
        s.step, s.best_valid_acc, s.best_epoch = st["step"], st["best_valid_acc"], st["best_epoch"]
        restore_rng_state(resume["rng"], rank, world_size)
        logging.info(f"resuming from {exp_dir / 'last.pt'}: epoch {st['epoch']}, batch {st['batch_idx']}, "
                     f"step {st['step']}")  # fmt: skip
    else:
        fix_random_seed(cfg.seed + rank)
    return s


def run(rank: int, world_size: int, cfg: TrainConfig, loss_fn: LossFn = cross_entropy_loss,
        extra_fields: Mapping[str, ExtraField] | None = None) -> dict | None:
    """Train on one rank (DDP when ``world_size > 1``: MASTER_ADDR / MASTER_PORT from the environment).

    ``loss_fn(logits, batch)``: the training loss (see ``cross_entropy_loss``; distillation plugs its own).
    ``extra_fields``: extra training batch fields for it (see ``asr_kd.datamodule``).
    Returns the run summary (the ``done`` file), or None when stopped early by ``max_steps``.
    """
    if not isinstance(cfg.model, ModelConfig):
        raise ValueError(f"TrainConfig.model must be a ModelConfig (arch, size, num_pdfs), got {cfg.model!r}")
    exp_dir = Path(cfg.exp_dir)
    done = read_done(exp_dir, cfg, RUNTIME_FIELDS)
    if done is not None:
        logging.info(f"{exp_dir} holds a finished run with this config: nothing to do")
        return done
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", rank)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    try:
        with log_to_file(exp_dir / "log", rank, world_size):
            resume = load_train_state(exp_dir / "last.pt", cfg, RUNTIME_FIELDS)  # checks the config first
            if rank == 0:
                write_json(exp_dir / "config.json", asdict(cfg))
            s = _setup(rank, world_size, cfg, device, loss_fn, extra_fields, resume)
            try:
                return _train_epochs(s, resume["state"] if resume else None)
            finally:
                if s.writer is not None:
                    s.writer.close()
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _train_epochs(s: Session, resume: dict | None) -> dict | None:
    cfg = s.cfg
    start_epoch, skip = (resume["epoch"], resume["batch_idx"]) if resume else (1, 0)
    if cfg.max_steps and s.step >= cfg.max_steps:
        logging.info(f"max_steps={cfg.max_steps} already reached: nothing to do")
        return None
    for epoch in range(start_epoch, cfg.num_epochs + 1):
        if not train_one_epoch(s, epoch, skip if epoch == start_epoch else 0):
            return None
        _maybe_best(s, validate(s), epoch)
        s.save([f"epoch-{epoch}.pt", "last.pt"], epoch + 1, 0)
    summary = {"best_valid_frame_acc": s.best_valid_acc, "best_epoch": s.best_epoch, "steps": s.step,
               "num_epochs": cfg.num_epochs, "final_checkpoint": f"epoch-{cfg.num_epochs}.pt",
               "best_checkpoint": "best-valid-acc.pt"}  # fmt: skip
    if s.world_size > 1:
        dist.barrier()
    if s.rank == 0:
        write_done(s.exp_dir, cfg, summary)
    logging.info(f"training finished: best valid frame accuracy {s.best_valid_acc:.4f} (epoch {s.best_epoch})")
    return summary


def _spawned(rank: int, world_size: int, cfg: TrainConfig, kwargs: dict) -> None:
    run(rank, world_size, cfg, **kwargs)


def train(cfg: TrainConfig, world_size: int | None = None, **kwargs) -> dict | None:
    """Entry point for one model. Under torchrun (RANK / WORLD_SIZE set) this process is one rank;
    otherwise ``world_size`` > 1 spawns that many local processes; else one process.
    ``kwargs``: ``loss_fn`` and ``extra_fields`` of ``run`` (picklable when spawning)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return run(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), cfg, **kwargs)
    if world_size and world_size > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(_free_port())
        torch.multiprocessing.spawn(_spawned, args=(world_size, cfg, kwargs), nprocs=world_size, join=True)
        return read_done(Path(cfg.exp_dir), cfg, RUNTIME_FIELDS)
    return run(0, 1, cfg, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
