"""Stage 0 (`asr-kd prepare`) holds a lock on its output directory and clears a killed run's temporaries."""

from __future__ import annotations

import pytest

from asr_kd.cli import main
from asr_kd.guard import StageError, locked_stage
from data_prep.common import CorpusError
from data_prep.yesno import prepare_yesno


def test_prepare_refuses_a_second_writer_then_cleans_up(tmp_path, lock_holder, capfd):
    out, corpus = tmp_path / "manifests", tmp_path / "no-corpus"
    corpus.mkdir()
    holder = lock_holder(out, "prepare")
    stale = out / f".tmp.{holder.pid}.yesno_recordings_train.jsonl.gz"
    stale.write_text("half written")
    argv = ["prepare", "yesno", "--corpus-dir", str(corpus), "--output-dir", str(out)]
    assert main(argv) == 1  # the CLI logs the error (it replaces the log handlers)
    assert f"{out} is being written by another `asr-kd prepare` run (pid {holder.pid}" in capfd.readouterr().err
    assert stale.exists()  # the live holder's temporaries are left alone
    holder.kill()
    holder.wait()
    assert main(argv) == 1  # now it runs (and fails on the empty corpus directory)
    err = capfd.readouterr().err
    assert "another `asr-kd prepare` run" not in err
    assert not stale.exists() and "removed 1 temporary file(s) left by an interrupted run" in err


def test_the_library_function_takes_the_lock_too(tmp_path, lock_holder, caplog):
    """prepare_yesno called from Python (not the CLI) is refused while another run holds the lock, and
    clears a killed run's temporaries once it holds it."""
    out, corpus = tmp_path / "manifests", tmp_path / "no-corpus"
    corpus.mkdir()
    holder = lock_holder(out, "prepare")
    stale = out / f".tmp.{holder.pid}.yesno_supervisions_test.jsonl.gz"
    stale.write_text("half written")
    with pytest.raises(StageError, match=rf"another `asr-kd prepare` run \(pid {holder.pid}"):
        prepare_yesno(corpus, output_dir=out)
    assert stale.exists()
    holder.kill()
    holder.wait()
    with pytest.raises(CorpusError, match="expects exactly 60 .wav files, found 0"):  # runs now: empty corpus
        prepare_yesno(corpus, out)
    assert not stale.exists()


def test_locked_stage_needs_the_directory_argument():
    with pytest.raises(TypeError, match="has no argument 'output_dir' to lock"):
        locked_stage("prepare")(lambda corpus_dir: None)
