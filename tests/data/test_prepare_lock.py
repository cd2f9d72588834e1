"""Stage 0 (`asr-kd prepare`) holds a lock on its output directory and clears a killed run's temporaries."""

from __future__ import annotations

from asr_kd.cli import main


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
