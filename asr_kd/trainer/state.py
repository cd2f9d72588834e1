"""Resumable training state: checkpoints with optimizer / scheduler / RNG and the loop's position, config
checks, the done marker.

Every checkpoint is in the toolkit's one model file format (:mod:`asr_kd.models.checkpoint`:
``load_model(path)`` rebuilds the model from any of them). The trainer's part, in ``extra``::

    train_config                          the resolved TrainConfig (plain dict)
    optimizer, scheduler                  state_dicts
    state                                 epoch and batch_idx to resume at, step, total_steps, best_valid_acc, ...
                                          (the sampler's position is (epoch, batch_idx): see ResumableSampler)
    rng                                   python / numpy / torch (/ CUDA) RNG states of every rank

(``best-valid-acc.pt`` holds only ``train_config``, ``valid``, ``epoch``, ``step``.)
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from asr_kd.guard import raise_if_output_error
from asr_kd.models.checkpoint import load_checkpoint, save_checkpoint
from asr_kd.utils import atomic_output, write_json

DONE = "done"  # file name of the finished-run marker
EPOCH_CHECKPOINT = re.compile(r"epoch-(\d+)\.pt")


def plain(obj: Any) -> Any:
    """Dataclasses / tuples -> JSON-like dicts and lists (the form configs are compared and stored in)."""
    if is_dataclass(obj):
        obj = asdict(obj)
    return json.loads(json.dumps(obj, default=str))


def config_diff(saved: dict, current: dict, ignore: Sequence[str] = (), prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ, except those in ``ignore``."""
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if name in ignore:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, ignore, f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} (saved) vs {b!r} (now)")
    return out


def check_same_config(saved: dict, cfg: Any, ignore: Sequence[str], where: Path) -> None:
    """Raise if ``cfg`` differs from the config a run in ``where`` was started with."""
    diff = config_diff(saved, plain(cfg), ignore)
    if diff:
        raise ValueError(f"{where} belongs to a run with a different config ({'; '.join(diff)}): "
                         "use another exp_dir, or delete this one to start over")  # fmt: skip


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *[x.item() if hasattr(x, "item") else x for x in np_state[2:]]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(states: list[dict], rank: int, world_size: int) -> None:
    """Restore this rank's RNG states (rank 0's for every rank if the world size changed)."""
    if len(states) != world_size:
        logging.warning(f"checkpoint has RNG states of {len(states)} ranks, running {world_size}: "
                        "the resumed run will not be bit-identical")  # fmt: skip
    state = states[rank if rank < len(states) else 0]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng(world_size: int) -> list[dict]:
    if world_size == 1:
        return [rng_state()]
    states: list[Any] = [None] * world_size
    dist.all_gather_object(states, rng_state())
    return states


def save_model_checkpoint(path: Path, model: nn.Module, cfg: Any, extra: dict | None = None) -> None:
    """Model-only checkpoint (``best-valid-acc.pt``): weights, model config, train config, ``extra``."""
    try:
        save_checkpoint(path, model, cfg.model, {"train_config": plain(cfg), **plain(extra or {})})
    except Exception as e:
        raise_if_output_error(e, path)
        raise


def save_train_state(exp_dir: Path, names: Sequence[str], model: nn.Module, cfg: Any, optimizer, scheduler,
                     state: dict, rank: int, world_size: int) -> None:  # fmt: skip
    """Collective (all ranks call it): rank 0 writes the resumable checkpoint under each of ``names``."""
    rng = _gather_rng(world_size)
    if rank != 0:
        return
    extra = {
        "train_config": plain(cfg), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "state": dict(state), "rng": rng,
    }  # fmt: skip
    target = exp_dir / names[0]
    try:  # a full disk: OutputIOError; every file is atomic, so the newest complete state stays readable
        first = save_checkpoint(target, model, cfg.model, extra)
        for name in names[1:]:
            target = exp_dir / name
            with atomic_output(target) as tmp:
                shutil.copyfile(first, tmp)
    except Exception as e:
        raise_if_output_error(e, target)
        raise
    logging.info(f"saved {', '.join(names)} (step {state['step']}, next: epoch {state['epoch']} "
                 f"batch {state['batch_idx']})")  # fmt: skip


def load_train_state(path: Path, cfg: Any, ignore: Sequence[str]) -> dict | None:
    """The resumable checkpoint at ``path`` (config checked against ``cfg``): ``{"model": state_dict,
    **extra}``, or None if there is none."""
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path, map_location="cpu")
    check_same_config(ckpt.extra["train_config"], cfg, ignore, path)
    return {"model": ckpt.state_dict, **ckpt.extra}


def _epoch_number(path: Path) -> int:
    match = EPOCH_CHECKPOINT.fullmatch(path.name)
    return int(match.group(1)) if match else -1


def newest_train_state(exp_dir: Path, cfg: Any, ignore: Sequence[str]) -> tuple[dict | None, Path | None]:
    """The resumable state to continue from: of ``last.pt`` and the newest readable ``epoch-<n>.pt``, the
    one with more optimizer steps; ``(None, None)`` when there is none (a fresh run).

    An unreadable checkpoint (truncated by a full disk, say) is skipped with a warning, so that a rerun
    after a failed save continues from the newest complete state instead of starting from scratch. A
    readable one with another config is an error (``check_same_config``).
    """
    epochs = sorted((p for p in exp_dir.glob("epoch-*.pt") if _epoch_number(p) >= 0), key=_epoch_number, reverse=True)
    best: tuple[dict, Path] | None = None
    for path in [exp_dir / "last.pt", *epochs]:
        if not path.is_file():
            continue
        try:
            ckpt = load_checkpoint(path, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - any unreadable file: skipped, named in the log
            logging.warning(f"{path} is not a readable checkpoint ({' '.join(str(e).split())[:200]}): ignored")
            continue
        if not {"train_config", "state", "optimizer", "scheduler", "rng"} <= set(ckpt.extra):
            logging.warning(f"{path} holds no resumable training state: ignored")
            continue
        check_same_config(ckpt.extra["train_config"], cfg, ignore, path)
        if best is None or ckpt.extra["state"]["step"] > best[0]["state"]["step"]:
            best = ({"model": ckpt.state_dict, **ckpt.extra}, path)
        if path.name != "last.pt":
            break  # the newest readable epoch checkpoint: older ones have fewer steps
    return best if best is not None else (None, None)


def write_done(exp_dir: Path, cfg: Any, summary: dict) -> None:
    write_json(exp_dir / DONE, {"summary": summary, "train_config": plain(cfg)})


def read_done(exp_dir: Path, cfg: Any, ignore: Sequence[str]) -> dict | None:
    """The summary of a finished run in ``exp_dir`` (config checked against ``cfg``), or None."""
    path = exp_dir / DONE
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    check_same_config(done["train_config"], cfg, ignore, path)
    final = exp_dir / done["summary"]["final_checkpoint"]
    if not final.is_file():
        raise FileNotFoundError(f"{path} marks the run finished but its final checkpoint {final} is missing: "
                                f"delete {path} (and last.pt) to train again")  # fmt: skip
    return done["summary"]
