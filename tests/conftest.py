"""Fixtures shared across test directories.

``frame_data``: tiny synthetic frame-labelled corpora and a tiny zoo model for the trainer and distillation
tests (``poison_features`` puts a NaN / inf / huge value into one cut's features). Features are N(0, 1) "fbank" frames; a frame's label is the arg-max of its first ``num_classes``
feature bins: a deterministic function of the features that an MLP learns quickly (chance = 1/C).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from lhotse import CutSet, Features, MonoCut, NumpyHdf5Writer

from asr_kd.models import ModelConfig
from asr_kd.trainer import DataConfig, TrainConfig

NUM_CLASSES = 4
FEATURE_DIM = 80


def make_cuts(out_dir: Path, name: str, num_cuts: int, seed: int, min_frames: int = 20,
              max_frames: int = 80) -> Path:  # fmt: skip
    """Write ``<out_dir>/<name>.jsonl.gz`` (+ .h5 storage) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    feats_path, labels_path = out_dir / f"{name}_feats.h5", out_dir / f"{name}_labels.h5"
    cuts = []
    with NumpyHdf5Writer(feats_path) as fw, NumpyHdf5Writer(labels_path) as lw:
        for i in range(num_cuts):
            num_frames = int(rng.integers(min_frames, max_frames + 1))
            feats = rng.standard_normal((num_frames, FEATURE_DIM)).astype(np.float32)
            labels = feats[:, :NUM_CLASSES].argmax(1).astype(np.int32)
            cut_id = f"{name}-{i:04d}"
            key = fw.write(cut_id, feats)
            features = Features(
                type="fbank", num_frames=num_frames, num_features=FEATURE_DIM, frame_shift=0.01,
                sampling_rate=16000, start=0.0, duration=num_frames * 0.01, storage_type=fw.name,
                storage_path=str(feats_path), storage_key=key,
            )  # fmt: skip
            label_array = lw.store_array(cut_id, labels, frame_shift=0.01, temporal_dim=0, start=0.0)
            cuts.append(MonoCut(cut_id, 0.0, num_frames * 0.01, 0, features=features,
                                custom={"frame_labels": label_array}))  # fmt: skip
    path = out_dir / f"{name}.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def poison_features(cuts_path: Path, index: int, value: float, frame: int | slice = 3, dim: int = 5) -> str:
    """Rewrite cut ``index`` of the manifest (sorted by id) with ``value`` (NaN, inf, 3e38) at feature ``dim``
    of ``frame`` (a frame or a slice of frames); returns its cut id. Its features move to ``<manifest stem>.poisoned.h5``."""
    cuts = sorted(CutSet.from_file(cuts_path), key=lambda c: c.id)
    cut = cuts[index]
    feats = cut.load_features().copy()
    feats[frame, dim] = value
    storage = cuts_path.with_name(cuts_path.name.replace(".jsonl.gz", ".poisoned.h5"))
    with NumpyHdf5Writer(storage, mode="a") as w:
        key = w.write(cut.id, feats)
    cut.features.storage_path, cut.features.storage_key = str(storage), key
    CutSet.from_cuts(cuts).to_file(cuts_path)
    return cut.id


def tiny_model_config(hidden: int = 32, context: int = 0, dropout: float = 0.1) -> ModelConfig:
    """A zoo DNN shrunk to a per-frame MLP (one hidden layer): a few thousand parameters."""
    overrides = {"hidden_dim": hidden, "num_layers": 1, "left_context": context, "right_context": context}
    return ModelConfig("dnn", "student-small", num_pdfs=NUM_CLASSES, dropout=dropout, overrides=overrides)


def tiny_config(data_dir: Path, exp_dir: Path, **overrides) -> TrainConfig:
    """Config of a few-second CPU run over ``data_dir``'s train/valid cuts (see ``make_corpus``)."""
    data = DataConfig(train_cuts=str(data_dir / "train.jsonl.gz"), valid_cuts=str(data_dir / "valid.jsonl.gz"),
                      max_duration=4.0, num_buckets=2, num_workers=0)  # fmt: skip
    cfg = TrainConfig(exp_dir=str(exp_dir), model=tiny_model_config(), data=data, num_epochs=2, lr=1e-2,
                      warmup_steps=3, weight_decay=0.01, grad_clip=5.0, seed=7, device="cpu", log_interval=4,
                      save_every_n=4)  # fmt: skip
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def make_corpus(data_dir: Path, num_train: int = 64, num_valid: int = 16) -> Path:
    make_cuts(data_dir, "train", num_train, seed=1)
    make_cuts(data_dir, "valid", num_valid, seed=2)
    return data_dir


@pytest.fixture(scope="session")
def frame_data() -> SimpleNamespace:
    """The tiny frame-corpus kit: ``num_classes``, ``make_cuts``, ``make_corpus``, ``tiny_config``,
    ``tiny_model_config`` (module docstring)."""
    return SimpleNamespace(num_classes=NUM_CLASSES, make_cuts=make_cuts, make_corpus=make_corpus,
                           tiny_config=tiny_config, tiny_model_config=tiny_model_config,
                           poison_features=poison_features)  # fmt: skip


@pytest.fixture
def lock_holder():
    """``hold(directory, stage) -> Popen``: a child process that holds ``stage_lock(directory, stage)``
    until it is killed (SIGKILL; at the latest when the test ends). For tests of "a second writer is
    refused" and "the lock dies with its holder"."""
    import os
    import subprocess
    import sys
    import textwrap

    children: list[subprocess.Popen] = []

    def hold(directory: Path, stage: str) -> subprocess.Popen:
        code = textwrap.dedent(
            f"""
            import time
            from asr_kd.guard import stage_lock
            with stage_lock({str(directory)!r}, {stage!r}):
                print("locked", flush=True)
                time.sleep(600)
            """
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        children.append(child)
        assert child.stdout.readline().strip() == "locked"
        return child

    yield hold
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()
