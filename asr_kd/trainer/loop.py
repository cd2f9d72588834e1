"""The training loop shared by teachers and students (layout and usage: :mod:`asr_kd.trainer`).

``run(rank, world_size, cfg)`` trains on one rank: build the model and data (``_setup``), then
``train_one_epoch`` / ``validate`` per epoch, resumable checkpoints and the ``done`` marker. The loss is
``cross_entropy_loss`` on frame labels or a plugged ``loss_fn`` (distillation).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from asr_kd.batch import IGNORE_INDEX, count_correct, forward_logits
from asr_kd.guard import remove_stale_temporaries, stage_lock
from asr_kd.models import ModelConfig, build_model
from asr_kd.trainer.config import RUNTIME_FIELDS, TrainConfig
from asr_kd.trainer.data import SKIPPED, ExtraField, FrameDataModule, check_disjoint, ignore_duplicates
from asr_kd.trainer.logs import log_to_file
from asr_kd.trainer.schedule import WarmupDecay
from asr_kd.trainer.session import LossFn, Session, all_reduce_sums, per_frame, raise_on_any_rank
from asr_kd.trainer.state import newest_train_state, read_done, restore_rng_state, save_model_checkpoint, write_done
from asr_kd.utils import fix_random_seed, resolve_device, write_json


DONE_TMP = ".tmp.*.done"  # the temporary of the done marker


def cross_entropy_loss(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean CE over non-padding frames. logits: (B, T, C); batch["frame_labels"]: (B, T), -100 = padding.

    The contract of every ``loss_fn``: returns (mean loss over non-padding frames, stats), where stats
    maps names to *sums* over the batch's labeled frames (divided by their count when logged). A sum over
    other frames comes with their count as ``<name>_frames`` (``per_frame``), and ``loss_frames`` counts
    the frames the mean loss is over when they are not the labeled frames (a transfer set's).
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
    logits = forward_logits(model, batch["features"], batch["lengths"], bf16)
    loss, stats = loss_fn(logits, batch)
    with torch.no_grad():
        correct, frames = count_correct(logits, batch["frame_labels"])
    loss_frames = stats.get("loss_frames", frames)
    return loss, {**stats, "loss": loss.detach() * loss_frames, "frames": frames, "correct": correct}


@torch.no_grad()
def nonfinite_cut_ids(model: nn.Module, batch: dict, device: torch.device, bf16: bool = False) -> list[str]:
    """The cut ids of the rows of ``batch`` whose model outputs hold NaN or inf when the cut is forwarded
    alone (run only to name the cuts behind a non-finite loss: batch statistics, BatchNorm's in training
    mode, spread one bad row to all rows of a batch)."""
    out = []
    for i, cut_id in enumerate(batch["cut_ids"]):
        n = int(batch["lengths"][i])
        x = batch["features"][i : i + 1, :n].to(device)
        logits = forward_logits(model, x, batch["lengths"][i : i + 1].to(device), bf16)
        if not torch.isfinite(logits).all():
            out.append(cut_id)
    return out


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
    error = None  # a non-finite loss on this rank; every rank raises it (raise_on_any_rank), none waits alone
    for batch in s.data.valid_dataloader():
        s.note_skipped(batch.pop(SKIPPED, {}), "validation")
        if not batch["cut_ids"]:
            continue
        check_labels(batch, s.cfg.model.num_pdfs)
        ignore_duplicates(batch)
        _, stats = compute_loss(s.module, batch, s.device, cross_entropy_loss, s.cfg.bf16)
        if not torch.isfinite(stats["loss"]):
            ids = nonfinite_cut_ids(s.module, batch, s.device, s.cfg.bf16)
            error = (f"step {s.step}: the validation loss is not finite on cut(s) {ids or batch['cut_ids']}: training "
                     f"stopped (a non-finite loss never picks the best checkpoint; best so far: frame accuracy "
                     f"{s.best_valid_acc:.4f}, epoch {s.best_epoch}); resume from an earlier checkpoint with a "
                     "lower lr")  # fmt: skip
            break
        for k, v in stats.items():
            sums[k] = sums.get(k, 0) + v.double()
    s.module.train()
    raise_on_any_rank(error, s.world_size, s.device)
    s.check_skipped("validation")
    empty = None
    if not sums:
        empty = (f"no validation frames: every cut of {s.cfg.data.valid_cuts} was skipped "
                 f"({len(s.valid_skipped)} with non-finite features)")  # fmt: skip
    raise_on_any_rank(empty, s.world_size, s.device, ValueError)
    result = per_frame(all_reduce_sums(sums, s.world_size))
    logging.info(f"step {s.step}: valid loss {result['loss']:.4f}, frame accuracy {result['frame_acc']:.4f} "
                 f"({int(result.get('frames', 0))} frames)")  # fmt: skip
    s.scalars("valid", {"loss": result["loss"], "frame_acc": result["frame_acc"]})
    return result


def _maybe_best(s: Session, result: dict[str, float], epoch: int) -> None:
    if not (math.isfinite(result["loss"]) and math.isfinite(result["frame_acc"])):
        return  # never chosen by a non-finite validation result
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
        s.note_skipped(batch.pop(SKIPPED, {}))
        if s.world_size > 1:  # before DDP's forward (a collective): a rank with nothing to forward stops all
            empty = None if batch["cut_ids"] else (
                f"epoch {epoch} batch {batch_idx}: every cut has non-finite features ({sorted(s.skipped)[-3:]}...); "
                "under DDP the ranks would diverge: remove these cuts from the training manifest")  # fmt: skip
            raise_on_any_rank(empty, s.world_size, s.device)
        if not batch["cut_ids"]:  # every cut of the batch left out: no step
            batch_idx += 1
            continue
        check_labels(batch, cfg.model.num_pdfs)
        loss, stats = compute_loss(s.model, batch, s.device, s.loss_fn, cfg.bf16)
        error = None
        if not torch.isfinite(loss):
            ids = nonfinite_cut_ids(s.module, batch, s.device, cfg.bf16)
            error = (f"step {s.step}: the training loss is {loss.item()}; model outputs are not finite on cut(s) "
                     f"{ids or 'none alone'} (batch: {batch['cut_ids']})")  # fmt: skip
        raise_on_any_rank(error, s.world_size, s.device)  # before backward: no rank waits in DDP's all-reduce
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
    kl = f", kl {avg['kl']:.4f}" if "kl" in avg else ""
    logging.info(f"step {s.step}: loss {avg['loss']:.4f}{kl}, frame acc {avg['frame_acc']:.4f}, lr {lr:.2e}, "
                 f"grad norm {grad_norm:.2f}, {fps:.0f} frames/s (rank {s.rank})")  # fmt: skip
    means = {k: v for k, v in avg.items() if not k.endswith("frames")}  # not the frame counts
    s.scalars("train", {**means, "lr": lr, "grad_norm": grad_norm, "frames_per_s": fps * s.world_size})
    return time.perf_counter()


def _setup(rank: int, world_size: int, cfg: TrainConfig, device: torch.device, loss_fn: LossFn, extra_fields,
           resume: dict | None, resume_path: Path | None = None) -> Session:  # fmt: skip
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
        s.skipped = dict(st.get("skipped", {}))
        restore_rng_state(resume["rng"], rank, world_size)
        logging.info(f"resuming from {resume_path}: epoch {st['epoch']}, batch {st['batch_idx']}, "
                     f"step {st['step']}")  # fmt: skip
    else:
        fix_random_seed(cfg.seed + rank)
    return s


def run(rank: int, world_size: int, cfg: TrainConfig, loss_fn: LossFn = cross_entropy_loss,
        extra_fields: Mapping[str, ExtraField] | None = None) -> dict | None:
    """Train on one rank (DDP when ``world_size > 1``: MASTER_ADDR / MASTER_PORT from the environment).

    ``loss_fn(logits, batch)``: the training loss (see ``cross_entropy_loss``; distillation plugs its own).
    ``extra_fields``: extra training batch fields for it (see :mod:`asr_kd.trainer.data`).
    Returns the run summary (the ``done`` file), or None when stopped early by ``max_steps``.
    """
    if not isinstance(cfg.model, ModelConfig):
        raise ValueError(f"TrainConfig.model must be a ModelConfig (arch, size, num_pdfs), got {cfg.model!r}")
    if not 0.0 <= cfg.max_skipped_share <= 1.0:
        raise ValueError(f"TrainConfig.max_skipped_share must be in [0, 1], got {cfg.max_skipped_share}")
    exp_dir = Path(cfg.exp_dir)
    done = read_done(exp_dir, cfg, RUNTIME_FIELDS)
    if done is not None:
        logging.info(f"{exp_dir} holds a finished run with this config: nothing to do")
        return done
    check_disjoint(cfg.data)  # before anything is written: validating on training cuts is refused
    stage = getattr(cfg, "STAGE", "train")
    with stage_lock(exp_dir, stage if rank == 0 else f"{stage}-rank{rank}"):  # a second run is refused
        if rank == 0:  # what a killed run left half-written (no live writer owns it: we hold the lock)
            remove_stale_temporaries(exp_dir, (".tmp.*.pt", ".tmp.*.json", DONE_TMP))
        return _run_locked(rank, world_size, cfg, loss_fn, extra_fields)


def _run_locked(rank: int, world_size: int, cfg: TrainConfig, loss_fn: LossFn,
                extra_fields: Mapping[str, ExtraField] | None) -> dict | None:  # fmt: skip
    exp_dir = Path(cfg.exp_dir)
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", rank)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    try:
        with log_to_file(exp_dir / "log", rank, world_size):
            resume, resume_path = newest_train_state(exp_dir, cfg, RUNTIME_FIELDS)  # checks the config first
            if rank == 0:
                write_json(exp_dir / "config.json", asdict(cfg))
            s = _setup(rank, world_size, cfg, device, loss_fn, extra_fields, resume, resume_path)
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
        s.check_skipped("training")  # every cut was seen once: the share is complete
        _maybe_best(s, validate(s), epoch)
        s.save([f"epoch-{epoch}.pt", "last.pt"], epoch + 1, 0)
    skipped = s.all_skipped("training")
    summary = {"best_valid_frame_acc": s.best_valid_acc, "best_epoch": s.best_epoch, "steps": s.step,
               "num_epochs": cfg.num_epochs, "final_checkpoint": f"epoch-{cfg.num_epochs}.pt",
               "best_checkpoint": "best-valid-acc.pt", "num_skipped_cuts": len(skipped),
               "skipped_cuts": sorted(skipped)}  # fmt: skip
    if skipped:
        logging.warning(f"{len(skipped)} training cut(s) skipped (non-finite features): {sorted(skipped)[:10]}")
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
