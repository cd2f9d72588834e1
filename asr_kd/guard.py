"""Stage guards: one writer per output directory, output I/O errors, skip thresholds, validated reuse.

Every stage that writes a directory runs inside :func:`stage_lock`, so a second run on the same
directory is refused instead of deleting or rewriting the first one's files. Under the lock the stage
may :func:`remove_stale_temporaries` (``.tmp.*`` files of a killed run: no other writer can own them).

A failing write of the stage's own output (full disk, file-size limit, I/O error) is not a bad
utterance: :func:`is_output_error` recognises it and :func:`raise_if_output_error` turns it into an
:class:`OutputIOError` that stops the stage, while a genuinely bad utterance is skipped and counted.
:func:`check_skipped_share` fails a stage that skipped more than a given share of its items.

A "done" check validates what it skips: :func:`record_files` notes sizes (and SHA-256 of small files)
of a finished output, :func:`verify_files` lists what changed since. A reused artefact (a trained GMM,
a graph) carries the key it was built from (:func:`record_artifact`); :func:`check_artifact` compares
it with what the current run expects.

Usage::

    with stage_lock(output_dir, "features"):
        remove_stale_temporaries(output_dir)
        ...
        try:
            writer.write(key, array)
        except Exception as exc:
            raise_if_output_error(exc, writer.storage_path)
            ...  # a bad utterance: skip it
        check_skipped_share(num_skipped, num_total, max_share, "utterances of split train")
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import json
import logging
import os
import re
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from asr_kd.utils import file_sha256, write_json

logger = logging.getLogger(__name__)

#: errno values that mean "the output cannot be written", not "this item is bad"
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EDQUOT, errno.EROFS})
#: files up to this size get a SHA-256 in :func:`record_files` (larger ones: size only)
SMALL_FILE_BYTES = 1 << 20
DEFAULT_MAX_SKIPPED_SHARE = 0.05

# messages of wrappers (h5py/HDF5, lilcom, torch) that carry the errno only as text
_ERRNO_IN_TEXT = re.compile(r"(?:errno\s*=?\s*|\[Errno\s+)(\d+)", re.IGNORECASE)
_STRERRORS = {os.strerror(code).lower(): code for code in OUTPUT_ERRNOS}


class StageError(RuntimeError):
    """A stage cannot run or must stop; the message says why and what to do."""


class OutputIOError(StageError):
    """Writing the stage's own output failed (disk full, file too large, I/O error)."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_

    def __reduce__(self):  # keep errno across processes (worker pools pickle exceptions)
        return (type(self), (str(self), self.errno))


class TooManySkippedError(StageError):
    """A stage skipped a larger share of its items than allowed."""


class StaleArtifactError(StageError):
    """A reused artefact was built from other inputs than the current run's."""


# ------------------------------------------------------------------------------------------ locks
_held: dict[tuple[int, str], list] = {}  # (pid, lock path) -> [open file, depth]: re-entrant per process


@contextlib.contextmanager
def stage_lock(directory: Path | str, stage: str) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``<directory>/.lock-<stage>`` for the block.

    Non-blocking: when another process holds it, :class:`StageError` names that process (pid, start
    time). The kernel releases the lock when the holder exits or is killed, so a lock never outlives
    its run; the file itself stays (removing it would race with a new run opening it). Re-entrant
    within one process (a library function and the command calling it may both take it).

    Yields the lock file's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".lock-{stage}"
    key = (os.getpid(), str(path.resolve()))
    if key in _held:
        _held[key][1] += 1
        try:
            yield path
        finally:
            _held[key][1] -= 1
        return
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = _read_holder(f.read())
        f.close()
        raise StageError(
            f"{directory} is being written by another `asr-kd {stage}` run ({holder}); wait for it to "
            f"finish, or stop it (its lock {path} is released when it exits), or use another output "
            "directory"
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stage": stage}))
        f.flush()
        _held[key] = [f, 1]
        yield path
    finally:
        _held.pop(key, None)
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def _read_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "pid unknown: it has just started"


def remove_stale_temporaries(directory: Path | str, patterns: Sequence[str] = (".tmp.*",)) -> list[Path]:
    """Remove files and directories matching ``patterns`` (globs relative to ``directory``, e.g.
    ``".tmp.*"`` or ``"**/.tmp.*.h5"``): temporaries of a killed run. Call it only while holding the
    directory's :func:`stage_lock`, which guarantees no live run owns them. Returns what was removed."""
    directory = Path(directory)
    removed = []
    for pattern in patterns:
        for path in sorted(directory.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.warning(
            "removed %d temporary file(s) left by an interrupted run in %s: %s",
            len(removed), directory, ", ".join(p.name for p in removed),
        )  # fmt: skip
    return removed


def locked_stage(stage: str, directory: str = "output_dir", patterns: Sequence[str] = (".tmp.*",)):
    """Decorator: the function runs holding :func:`stage_lock` on its ``directory`` argument, after
    :func:`remove_stale_temporaries` of ``patterns`` there, so that a library caller is guarded as the
    command is (a command may still take the lock itself: it is re-entrant)."""

    def decorate(fn):
        signature = inspect.signature(fn)
        if directory not in signature.parameters:
            raise TypeError(f"{fn.__qualname__} has no argument {directory!r} to lock")

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            target = Path(signature.bind(*args, **kwargs).arguments[directory])
            with stage_lock(target, stage):
                remove_stale_temporaries(target, patterns)
                return fn(*args, **kwargs)

        return locked

    return decorate


# -------------------------------------------------------------------------------- output errors
def output_errno(exc: BaseException) -> int | None:
    """The errno of ``exc`` (or of an exception it was raised from) if it is one of
    :data:`OUTPUT_ERRNOS`, read from ``OSError.errno`` or from a wrapper's message
    (h5py: ``errno = 28``; ``[Errno 27] File too large``); else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OutputIOError) and exc.errno in OUTPUT_ERRNOS:
            return exc.errno
        if isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS:
            return exc.errno
        text = str(exc)
        for match in _ERRNO_IN_TEXT.finditer(text):
            if int(match.group(1)) in OUTPUT_ERRNOS:
                return int(match.group(1))
        lowered = text.lower()
        for message, code in _STRERRORS.items():
            if message in lowered:
                return code
        exc = exc.__cause__ or exc.__context__
    return None


def is_output_error(exc: BaseException) -> bool:
    """True if ``exc`` means the output cannot be written (disk full, file too large, quota, read-only
    file system, I/O error) rather than that the item being processed is bad."""
    return output_errno(exc) is not None


def raise_if_output_error(exc: BaseException, path: Path | str) -> None:
    """Raise :class:`OutputIOError` (from ``exc``) if ``exc`` is an output error writing ``path``."""
    code = output_errno(exc)
    if code is None:
        return
    raise OutputIOError(
        f"cannot write {path}: {os.strerror(code)} (errno {code}); the stage stopped and left no finished "
        "output. Free space (or raise the file-size limit) and rerun it: finished work is kept",
        code,
    ) from exc


# ----------------------------------------------------------------------------- skip thresholds
def check_skipped_share(
    num_skipped: int, num_total: int, max_share: float = DEFAULT_MAX_SKIPPED_SHARE, what: str = "items"
) -> None:
    """Raise :class:`TooManySkippedError` if ``num_skipped / num_total > max_share``.

    ``num_total`` counts every item the stage tried (kept + skipped). Exact at the boundary:
    ``max_share`` is read as the nearest fraction with a denominator up to 10^6 (0.05 as 1/20, so 5 of
    100 passes and 6 fail; 1/3 as 1/3).
    """
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"max_share must be in [0, 1], got {max_share}")
    if num_total <= 0 or num_skipped <= 0:
        return
    if Fraction(num_skipped, num_total) > Fraction(max_share).limit_denominator(10**6):
        raise TooManySkippedError(
            f"{what}: {num_skipped} of {num_total} skipped ({num_skipped / num_total:.1%}), more than "
            f"--max-skipped-share {max_share} ({max_share:.1%}); see the skip list for the reasons, fix the "
            "input, or raise --max-skipped-share"
        )


# ------------------------------------------------------------------------- validated "done" checks
def record_files(paths: Iterable[Path | str], root: Path | str | None = None) -> dict[str, dict]:
    """``{path: {"size": bytes, "sha256": hex (files <= SMALL_FILE_BYTES only)}}`` for finished files;
    keys are relative to ``root`` when given (the record then survives moving the directory)."""
    record = {}
    for path in paths:
        path = Path(path)
        size = path.stat().st_size
        entry: dict[str, Any] = {"size": size}
        if size <= SMALL_FILE_BYTES:
            entry["sha256"] = file_sha256(path)
        record[str(path.relative_to(root)) if root is not None else str(path)] = entry
    return record


def verify_files(record: dict[str, dict], root: Path | str | None = None) -> list[str]:
    """What differs between ``record`` (from :func:`record_files`) and the files now: one message per
    missing file, size or checksum mismatch; empty when everything is as recorded."""
    problems = []
    for name, entry in record.items():
        path = Path(root) / name if root is not None else Path(name)
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            problems.append(f"{path}: {size} bytes, {entry.get('size')} recorded")
        elif "sha256" in entry and file_sha256(path) != entry["sha256"]:
            problems.append(f"{path}: content differs from the recorded checksum")
    return problems


def artifact_key_path(path: Path | str) -> Path:
    """The sidecar ``<path>.key.json`` that records what an artefact was built from."""
    path = Path(path)
    return path.with_name(path.name + ".key.json")


def record_artifact(path: Path | str, key: dict, companions: Sequence[Path | str] = ()) -> None:
    """Write ``key`` (what the finished ``path`` was built from: lang hash, config, ...) and the size/checksum
    of ``path`` and of its ``companions`` (files in the same directory it refers to, e.g. the HDF5 archive
    of a cut manifest) to its sidecar, atomically; call it after they are all in place."""
    path = Path(path)
    files = record_files([path, *companions], root=path.parent)
    write_json(artifact_key_path(path), {"key": key, "files": files})


def check_artifact(path: Path | str, expected: dict) -> str | None:
    """None if ``path`` (and its recorded companions) exist, are unchanged since :func:`record_artifact` and
    were built from ``expected``; else why it must not be reused (missing, no key, damaged, or which fields differ).

    The caller rebuilds the artefact, or raises :class:`StaleArtifactError` with the reason."""
    path = Path(path)
    if not path.exists():
        return f"{path} does not exist"
    sidecar = artifact_key_path(path)
    try:
        stored = json.loads(sidecar.read_text())
        key, files = stored["key"], stored["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path} has no readable key {sidecar.name}: what it was built from is unknown"
    problems = verify_files(files, root=path.parent)
    if problems:
        return f"{path} changed after it was recorded: {'; '.join(problems)}"
    expected = json.loads(json.dumps(expected, sort_keys=True, default=str))  # as stored
    differ = sorted(k for k in set(key) | set(expected) if key.get(k) != expected.get(k))
    if differ:
        details = ", ".join(f"{k}: built for {key.get(k)!r}, now {expected.get(k)!r}" for k in differ)
        return f"{path} was built from other inputs ({details})"
    return None
