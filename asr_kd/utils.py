"""Small shared helpers: logging, atomic file writes, seeding, resolved-config dumps."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

LOG_FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"


def setup_logging(log_file: Path | str | None = None, level: int = logging.INFO) -> None:
    """Configure the root logger: time, level, file:line; optionally also to ``log_file``."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)


def tmp_path_for(path: Path | str) -> Path:
    """The temporary sibling a finished ``path`` is renamed from (keeps suffixes such as .jsonl.gz)."""
    path = Path(path)
    return path.with_name(f".tmp.{os.getpid()}.{path.name}")


@contextlib.contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` only if the block finishes.

    A killed or failing stage therefore never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` (dataclasses allowed) as indented JSON, atomically."""
    if is_dataclass(obj):
        obj = asdict(obj)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path | str, what: str, hint: str = "") -> Any:
    """The JSON object in ``path``; ValueError naming the file and ``what`` it should hold when it cannot
    be read or parsed (``hint`` says how to get a good one, e.g. "rerun `asr-kd align`")."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read {what} ({e}){'; ' + hint if hint else ''}") from e


def settings_from_pairs(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b.c=x y", "d=false"]`` -> ``{"a": 1, "b": {"c": "x y"}, "d": False}``.

    A value is read as JSON when it is valid JSON (numbers, true/false, null, quoted strings), else kept
    as the string it is; dots in a key nest it. ValueError names a pair without ``=`` or a key given twice.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"setting {pair!r}: expected KEY=VALUE")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *parents, leaf = key.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ValueError(f"setting {pair!r}: {parent!r} is also given a value")
        if leaf in node:
            raise ValueError(f"setting {key!r} is given twice")
        node[leaf] = value
    return out


def write_text(path: Path | str, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __dir__)`` for a package whose public names are imported from their submodule on
    first use (PEP 562), so that importing one submodule does not load the others' heavy dependencies.

    Args:
        package: the package's ``__name__``.
        exports: public name -> submodule that defines it.
    """
    import importlib
    import sys

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__


def resolve_device(device: str, local_rank: int = 0):
    """``"auto"`` -> CUDA when present, else CPU; a bare ``"cuda"`` takes GPU ``local_rank``."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(device)


def fix_random_seed(seed: int) -> None:
    """Seed python, numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
