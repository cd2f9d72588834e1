"""Non-finite features and losses in training (issue 10, item 6): skipped by cut id and counted, or stopped
with the cut named; a non-finite validation loss never picks the best checkpoint."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from asr_kd.batch import NonFiniteFeaturesError, collate_frames, load_cut_features
from asr_kd.guard import TooManySkippedError
from asr_kd.trainer import train
from asr_kd.trainer.data import FrameDataModule
from lhotse import CutSet


def corpus(tmp_path: Path, frame_data) -> Path:
    return frame_data.make_corpus(tmp_path / "data", num_train=24, num_valid=8)


def test_loading_nonfinite_features_names_the_cut(tmp_path, frame_data):
    data = corpus(tmp_path, frame_data)
    bad = frame_data.poison_features(data / "train.jsonl.gz", 5, math.nan, frame=7)
    cuts = {c.id: c for c in CutSet.from_file(data / "train.jsonl.gz")}
    with pytest.raises(NonFiniteFeaturesError, match=rf"cut {bad}: 1 of \d+ feature values are not finite .* frame 7"):
        load_cut_features(cuts[bad])
    batch, skipped = collate_frames(list(cuts.values())[:8], skip_nonfinite=True)
    assert list(skipped) == [bad] and bad not in batch["cut_ids"] and len(batch["cut_ids"]) == 7


def test_nan_training_cut_is_skipped_and_counted(tmp_path, frame_data, caplog):
    data = corpus(tmp_path, frame_data)
    bad = frame_data.poison_features(data / "train.jsonl.gz", 3, math.nan)
    cfg = frame_data.tiny_config(data, tmp_path / "exp", num_epochs=4)
    dm = FrameDataModule(cfg.data, seed=cfg.seed)
    batches = list(dm.train_dataloader(1))
    assert sum(len(b["cut_ids"]) for b in batches) == 23
    assert [list(b["skipped"]) for b in batches if b["skipped"]] == [[bad]]
    with caplog.at_level(logging.WARNING):
        summary = train(cfg)
    assert summary["num_skipped_cuts"] == 1 and summary["skipped_cuts"] == [bad]
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage() and bad in r.getMessage()]
    assert warnings and all("not finite" in w or "non-finite" in w for w in warnings)
    assert summary["best_valid_frame_acc"] > 0.45  # trained normally on the 23 others (chance 0.25)


def test_nan_validation_cut_is_skipped(tmp_path, frame_data, caplog):
    data = corpus(tmp_path, frame_data)
    bad = frame_data.poison_features(data / "valid.jsonl.gz", 0, math.inf)
    # 1 of the 8 validation cuts: 12.5%, exactly the threshold (above it, the run fails)
    cfg = frame_data.tiny_config(data, tmp_path / "exp", num_epochs=1, max_skipped_share=0.125)
    with caplog.at_level(logging.WARNING):
        summary = train(cfg)
    assert summary["best_valid_frame_acc"] > 0.3
    assert sum(f"validation cut {bad} skipped" in r.getMessage() for r in caplog.records) == 1  # counted once
    assert any("1 of 8 validation cuts skipped (12.5%" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "exp" / "skipped_validation.txt").read_text().split("\t")[0] == bad
    assert (tmp_path / "exp" / "skipped_training.txt").read_text() == ""  # written, nothing skipped
    with pytest.raises(TooManySkippedError, match=r"validation cuts of .*valid.jsonl.gz .*: 1 of 8 skipped"):
        train(frame_data.tiny_config(data, tmp_path / "exp-default", num_epochs=1))  # 12.5% > 5%


def test_training_fails_above_the_skipped_share(tmp_path, frame_data, caplog):
    data = corpus(tmp_path, frame_data)
    bad = sorted(frame_data.poison_features(data / "train.jsonl.gz", i, math.nan) for i in (3, 11))
    cfg = frame_data.tiny_config(data, tmp_path / "exp", num_epochs=2)  # default max_skipped_share 0.05
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(TooManySkippedError, match=r"2 of 24 skipped \(8.3%\)"),
    ):
        train(cfg)
    assert any("2 of 24 training cuts skipped (8.3%" in r.getMessage() for r in caplog.records)
    listed = (tmp_path / "exp" / "skipped_training.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == bad
    assert not (tmp_path / "exp" / "epoch-1.pt").exists() and not (tmp_path / "exp" / "done").exists()
    # 2 of 24 is 1/12: a threshold of 1/12 lets the same run finish (resumed: the threshold is a runtime field)
    cfg.max_skipped_share = 1 / 12
    summary = train(cfg)
    assert summary["num_skipped_cuts"] == 2 and summary["skipped_cuts"] == bad
    with pytest.raises(ValueError, match=r"max_skipped_share must be in \[0, 1\], got 1.5"):
        train(frame_data.tiny_config(data, tmp_path / "exp-bad", max_skipped_share=1.5))


def test_nonfinite_training_loss_names_the_cut(tmp_path, frame_data):
    """Finite features so large that the model's outputs overflow: the error names that cut only."""
    data = corpus(tmp_path, frame_data)
    bad = frame_data.poison_features(data / "train.jsonl.gz", 2, 3e38, frame=slice(3, 8))  # sums overflow
    cfg = frame_data.tiny_config(data, tmp_path / "exp", num_epochs=1)
    cfg.data.spec_augment = False
    with pytest.raises(FloatingPointError, match=rf"not finite on cut\(s\) \['{bad}'\]"):
        train(cfg)


def test_nonfinite_validation_loss_stops_and_never_picks_best(tmp_path, frame_data):
    data = corpus(tmp_path, frame_data)
    bad = frame_data.poison_features(data / "valid.jsonl.gz", 4, 3e38, frame=slice(3, 8))
    cfg = frame_data.tiny_config(data, tmp_path / "exp", num_epochs=2)
    with pytest.raises(FloatingPointError, match=rf"validation loss is not finite on cut\(s\) \['{bad}'\]"):
        train(cfg)
    exp = Path(cfg.exp_dir)
    assert not (exp / "best-valid-acc.pt").exists() and not (exp / "done").exists()
    assert not (exp / "epoch-1.pt").exists()  # stopped at the first validation
    assert torch.load(exp / "last.pt", weights_only=False)  # the mid-epoch state is still there to resume from
