"""Non-finite features and losses in training (issue 10, item 6): skipped by cut id and counted, or stopped
with the cut named; a non-finite validation loss never picks the best checkpoint."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from asr_kd.batch import NonFiniteFeaturesError, collate_frames, load_cut_features
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
    with caplog.at_level(logging.WARNING):
        summary = train(frame_data.tiny_config(data, tmp_path / "exp", num_epochs=1))
    assert summary["best_valid_frame_acc"] > 0.3
    assert sum(f"validation cut {bad} skipped" in r.getMessage() for r in caplog.records) == 1  # counted once


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
