"""asr_kd.guard: stage locks across processes, output-error classification, skip thresholds, file records."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asr_kd.guard import (
    OutputIOError,
    StageError,
    TooManySkippedError,
    check_artifact,
    check_skipped_share,
    is_output_error,
    raise_if_output_error,
    record_artifact,
    record_files,
    remove_stale_temporaries,
    stage_lock,
    verify_files,
)

REPO = Path(__file__).resolve().parents[1]


def test_second_writer_refused_until_first_is_killed(tmp_path, lock_holder):
    child = lock_holder(tmp_path, "features")
    with pytest.raises(StageError) as info, stage_lock(tmp_path, "features"):
        pass
    message = str(info.value)
    assert f"pid {child.pid}" in message
    assert "asr-kd features" in message and str(tmp_path) in message
    with stage_lock(tmp_path, "lang"):  # another stage's lock is independent
        pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    with stage_lock(tmp_path, "features") as path:  # freed by the kernel at the holder's death
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_lock_is_reentrant_in_one_process_and_released_on_exit(tmp_path):
    with stage_lock(tmp_path, "align"):
        with stage_lock(tmp_path, "align"):
            pass
        # still held after the inner block: a child is refused
        code = f"from asr_kd.guard import stage_lock\nwith stage_lock({str(tmp_path)!r}, 'align'): pass"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        refused = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert refused.returncode != 0 and "StageError" in refused.stderr
    accepted = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert accepted.returncode == 0, accepted.stderr


def test_output_errors_are_classified():
    assert is_output_error(OSError(errno.ENOSPC, "No space left on device"))
    assert is_output_error(OSError(errno.EFBIG, "File too large"))
    assert is_output_error(OSError(errno.EIO, "Input/output error"))
    # h5py/HDF5 wraps the errno in its message
    assert is_output_error(RuntimeError("Can't decrement id ref count (file write failed: errno = 28)"))
    try:  # chained: the classifier follows __cause__
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise ValueError("lilcom write failed") from inner
    except ValueError as outer:
        assert is_output_error(outer)
    assert not is_output_error(OSError(errno.ENOENT, "No such file or directory"))
    assert not is_output_error(ValueError("cannot convert float NaN to integer"))
    assert not is_output_error(RuntimeError("Error opening 'a.wav': Format not recognised."))


def test_raise_if_output_error(tmp_path):
    raise_if_output_error(ValueError("bad utterance"), tmp_path / "x")  # not an output error: no raise
    with pytest.raises(OutputIOError) as info:
        raise_if_output_error(OSError(28, "No space left on device"), tmp_path / "feats-00000.lca")
    assert info.value.errno == errno.ENOSPC
    assert "feats-00000.lca" in str(info.value) and "No space left on device" in str(info.value)


def test_skipped_share_boundary():
    check_skipped_share(5, 100, 0.05, "cuts")  # exactly 5%: allowed
    with pytest.raises(TooManySkippedError, match=r"cuts: 6 of 100 skipped \(6.0%\)"):
        check_skipped_share(6, 100, 0.05, "cuts")
    check_skipped_share(1, 3, 1 / 3)  # exact even for shares not representable in decimal
    with pytest.raises(TooManySkippedError):
        check_skipped_share(1, 20, 0.0499)
    check_skipped_share(0, 0, 0.0)  # nothing tried: nothing to judge
    with pytest.raises(TooManySkippedError):
        check_skipped_share(1, 1000, 0.0)
    with pytest.raises(ValueError):
        check_skipped_share(0, 1, 1.5)


def test_remove_stale_temporaries(tmp_path):
    (tmp_path / ".tmp.123.cuts.jsonl.gz").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".tmp.9.labels.h5").write_text("x")
    (tmp_path / "keep.h5").write_text("x")
    removed = remove_stale_temporaries(tmp_path, (".tmp.*", "**/.tmp.*.h5"))
    assert sorted(p.name for p in removed) == [".tmp.123.cuts.jsonl.gz", ".tmp.9.labels.h5"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.h5", "sub"]


def test_record_and_verify_files(tmp_path, monkeypatch):
    small, big = tmp_path / "small.json", tmp_path / "big.lca"
    small.write_text("{}")
    big.write_bytes(b"\0" * 2000)
    monkeypatch.setattr("asr_kd.guard.SMALL_FILE_BYTES", 1000)
    record = record_files([small, big], root=tmp_path)
    assert record == {
        "small.json": {"size": 2, "sha256": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "big.lca": {"size": 2000},
    }
    assert verify_files(record, root=tmp_path) == []
    small.write_text("[]")  # same size, other content
    with open(big, "r+b") as f:
        f.truncate(1500)
    problems = verify_files(record, root=tmp_path)
    assert problems == [f"{small}: content differs from the recorded checksum", f"{big}: 1500 bytes, 2000 recorded"]
    big.unlink()
    assert verify_files(record, root=tmp_path)[1] == f"{big}: missing"


def test_check_artifact(tmp_path):
    model = tmp_path / "final.gmm.pt"
    assert "does not exist" in check_artifact(model, {"lang": "a"})
    model.write_bytes(b"gmm")
    assert "no readable key" in check_artifact(model, {"lang": "a"})
    record_artifact(model, {"lang": "a", "num_pdfs": 58})
    assert check_artifact(model, {"lang": "a", "num_pdfs": 58}) is None
    reason = check_artifact(model, {"lang": "b", "num_pdfs": 84})
    assert reason.endswith("(lang: built for 'a', now 'b', num_pdfs: built for 58, now 84)")
    time.sleep(0.01)
    model.write_bytes(b"other gmm")
    assert "changed after it was recorded" in check_artifact(model, {"lang": "a", "num_pdfs": 58})
