"""A training run's log file: ``log/log-train-<date>`` (rank 0) or ``...-rank<r>``, rank in every line."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Iterator

from asr_kd.utils import LOG_FORMAT


@contextlib.contextmanager
def log_to_file(log_dir: Path, rank: int = 0, world_size: int = 1) -> Iterator[Path]:
    """Send the root logger's INFO records to a new file in ``log_dir`` while the block runs."""
    log_dir.mkdir(parents=True, exist_ok=True)
    name = "log-train-" + time.strftime("%Y-%m-%d-%H-%M-%S") + (f"-rank{rank}" if rank else "")
    path = log_dir / name
    handler = logging.FileHandler(path)
    fmt = LOG_FORMAT.replace("%(levelname)s", f"%(levelname)s rank{rank}") if world_size > 1 else LOG_FORMAT
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    old_level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
