"""Training under faults (issue 10, items 1 and 9): a full disk while saving, a truncated checkpoint, a second
run on the same experiment directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from asr_kd.guard import OutputIOError, StageError
from asr_kd.models import load_checkpoint
from asr_kd.trainer import train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, frame_data):
    return frame_data.make_corpus(tmp_path_factory.mktemp("faults"), num_train=32, num_valid=8)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory, frame_data):
    cfg = frame_data.tiny_config(corpus, tmp_path_factory.mktemp("reference") / "exp", save_every_n=0)
    return cfg, train(cfg)


def assert_same_final_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a / "epoch-2.pt").state_dict, load_checkpoint(b / "epoch-2.pt").state_dict
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=0)


def test_disk_full_at_the_first_last_pt_resumes_from_epoch_1(corpus, reference, tmp_path, frame_data, monkeypatch,
                                                            caplog):  # fmt: skip
    """The disk fills while last.pt is copied from epoch-1.pt: a clean OutputIOError; the rerun continues
    from epoch-1.pt (it used to start from scratch) and ends with the uninterrupted run's weights."""
    ref_cfg, ref_summary = reference
    cfg = frame_data.tiny_config(corpus, tmp_path / "exp", save_every_n=0)
    real_copy = shutil.copyfile

    def full_disk(src, dst, *args, **kwargs):
        if Path(dst).name.endswith("last.pt"):
            raise OSError(28, "No space left on device")
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr("asr_kd.trainer.state.shutil.copyfile", full_disk)
    with pytest.raises(OutputIOError, match=r"cannot write .*last.pt: No space left on device"):
        train(cfg)
    exp = Path(cfg.exp_dir)
    assert (exp / "epoch-1.pt").is_file() and not (exp / "last.pt").exists() and not list(exp.glob(".tmp.*"))
    monkeypatch.setattr("asr_kd.trainer.state.shutil.copyfile", real_copy)
    with caplog.at_level("INFO"):
        assert train(cfg) == ref_summary
    assert any(f"resuming from {exp / 'epoch-1.pt'}: epoch 2, batch 0" in r.getMessage() for r in caplog.records)
    assert_same_final_weights(Path(ref_cfg.exp_dir), exp)


def test_truncated_last_pt_falls_back_to_the_newest_epoch_checkpoint(corpus, reference, tmp_path, frame_data,
                                                                      caplog):  # fmt: skip
    ref_cfg, ref_summary = reference
    cfg = frame_data.tiny_config(corpus, tmp_path / "exp", save_every_n=2)
    cfg.max_steps = ref_summary["steps"] // 2 + 3  # stops in epoch 2, after a mid-epoch last.pt
    assert train(cfg) is None
    exp = Path(cfg.exp_dir)
    last = (exp / "last.pt").read_bytes()
    (exp / "last.pt").write_bytes(last[: len(last) // 3])  # what a full disk can leave behind a non-atomic copy
    cfg.max_steps = 0
    with caplog.at_level("INFO"):
        assert train(cfg) == ref_summary
    messages = [r.getMessage() for r in caplog.records]
    assert any("last.pt is not a readable checkpoint" in m for m in messages)
    assert any(f"resuming from {exp / 'epoch-1.pt'}" in m for m in messages)
    assert_same_final_weights(Path(ref_cfg.exp_dir), exp)


def test_a_second_training_run_on_one_exp_dir_is_refused(corpus, tmp_path, frame_data, lock_holder):
    cfg = frame_data.tiny_config(corpus, tmp_path / "exp", num_epochs=1)
    holder = lock_holder(Path(cfg.exp_dir), "train")
    with pytest.raises(StageError, match=rf"being written by another `asr-kd train` run \(pid {holder.pid}"):
        train(cfg)
    assert not (Path(cfg.exp_dir) / "config.json").exists()  # nothing written
    holder.kill()
    holder.wait()
    stale = Path(cfg.exp_dir) / ".tmp.99999.last.pt"  # what a killed run leaves mid-save
    stale.write_bytes(b"partial")
    assert train(cfg)["num_epochs"] == 1  # the lock died with its holder
    assert not stale.exists()
