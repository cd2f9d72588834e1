"""The trainer end to end on a tiny synthetic corpus: learning, exp-dir layout, exact resumption, re-runs."""

import json
from pathlib import Path

import pytest
import torch

import asr_kd.trainer.loop as train_module
from asr_kd.models import load_checkpoint, load_model
from asr_kd.trainer import TrainConfig, cross_entropy_loss, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, frame_data):
    return frame_data.make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory, frame_data):
    """A finished 3-epoch run: (config, summary)."""
    cfg = frame_data.tiny_config(corpus, tmp_path_factory.mktemp("exp") / "finished", num_epochs=3, lr=3e-2)
    return cfg, train(cfg)


def test_learns_well_above_chance(finished, frame_data):
    cfg, summary = finished
    chance = 1 / frame_data.num_classes  # the labels are the arg-max of 4 i.i.d. feature bins: uniform
    assert summary["best_valid_frame_acc"] > chance + 0.35
    model, model_config = load_model(Path(cfg.exp_dir) / summary["best_checkpoint"])
    assert model_config == cfg.model and not model.training


def test_exp_dir_layout(finished):
    cfg, summary = finished
    exp = Path(cfg.exp_dir)
    for name in ("config.json", "done", "last.pt", "best-valid-acc.pt", "epoch-1.pt", "epoch-2.pt", "epoch-3.pt"):
        assert (exp / name).is_file(), name
    assert summary["final_checkpoint"] == "epoch-3.pt"
    assert json.loads((exp / "config.json").read_text())["model"]["arch"] == "dnn"
    log = next((exp / "log").glob("log-train-*")).read_text()
    assert "valid loss" in log and "frames/s" in log
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    final = load_checkpoint(exp / "epoch-3.pt")
    assert final.extra["train_config"]["lr"] == cfg.lr  # the resolved config is inside every checkpoint
    assert final.extra["state"]["epoch"] == 4 and final.extra["state"]["batch_idx"] == 0
    assert not list(exp.glob(".tmp.*"))


def test_rerun_of_a_finished_run_is_a_no_op(finished, monkeypatch):
    cfg, summary = finished
    exp = Path(cfg.exp_dir)
    before = {p: p.stat().st_mtime_ns for p in exp.rglob("*")}

    def no_model(*args):
        raise AssertionError("a finished run must not build its model again")

    monkeypatch.setattr(train_module, "build_model", no_model)
    assert train(cfg) == summary
    assert {p: p.stat().st_mtime_ns for p in exp.rglob("*")} == before


def test_rerun_with_another_config_is_refused(finished, frame_data):
    cfg, _ = finished
    other = frame_data.tiny_config(Path(cfg.data.train_cuts).parent, Path(cfg.exp_dir), num_epochs=3, lr=1e-3)
    with pytest.raises(ValueError, match=r"lr: 0.03 \(saved\) vs 0.001 \(now\)"):
        train(other)


class SimulatedKill(Exception):
    pass


class KillAfter:
    """A training loss that raises in its (n + 1)-th call, like a kill in the middle of a step."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self, logits, batch):
        self.calls += 1
        if self.calls > self.n:
            raise SimulatedKill
        return cross_entropy_loss(logits, batch)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


@pytest.mark.parametrize("interrupt", ["kill", "max_steps"])
def test_interrupted_run_resumes_to_identical_weights(corpus, tmp_path, interrupt, frame_data):
    reference_cfg = frame_data.tiny_config(corpus, tmp_path / "reference")  # SpecAugment, dropout, shuffling: all on
    reference = train(reference_cfg)
    num_steps = reference["steps"]
    kill_at = num_steps // 2 + 3  # in epoch 2; the last save (every 4 steps) is mid-epoch
    cfg = frame_data.tiny_config(corpus, tmp_path / "interrupted")
    if interrupt == "kill":
        with pytest.raises(SimulatedKill):
            train(cfg, loss_fn=KillAfter(kill_at))
    else:
        cfg.max_steps = kill_at
        assert train(cfg) is None
        cfg.max_steps = 0
    exp = Path(cfg.exp_dir)
    assert not (exp / "done").exists() and not (exp / "epoch-2.pt").exists()
    state = load_checkpoint(exp / "last.pt").extra["state"]
    assert state["epoch"] == 2 and 0 < state["batch_idx"] and state["step"] < num_steps
    resumed = train(cfg)
    assert resumed == reference
    expected, got = _weights(tmp_path / "reference/epoch-2.pt"), _weights(exp / "epoch-2.pt")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
    assert torch.equal(_weights(exp / "best-valid-acc.pt")["output.weight"],
                       _weights(tmp_path / "reference/best-valid-acc.pt")["output.weight"])  # fmt: skip


def test_config_json_round_trips(finished):
    cfg, _ = finished
    saved = json.loads((Path(cfg.exp_dir) / "config.json").read_text())
    assert TrainConfig.from_dict(saved) == cfg
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({**saved, "learning_rate": 1.0})


def test_done_marker_without_final_checkpoint_is_an_error(finished, tmp_path):
    cfg, _ = finished
    exp = tmp_path / "copy"
    exp.mkdir()
    (exp / "done").write_text((Path(cfg.exp_dir) / "done").read_text())
    copy = TrainConfig.from_dict({**json.loads((Path(cfg.exp_dir) / "config.json").read_text()), "exp_dir": str(exp)})
    with pytest.raises(FileNotFoundError, match="final checkpoint .*epoch-3.pt is missing"):
        train(copy)
