"""Non-finite features in the cache stage, in ``evaluate`` and in distillation (issue 10, item 6): the cut is
skipped by id and counted, never turned into NaN soft targets or a silently scored cut."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from lhotse import CutSet

from asr_kd.guard import TooManySkippedError
from asr_kd.kd.cache import build_cache, load_soft_target_cuts, read_metadata
from asr_kd.kd.distill import DistillConfig, distill
from asr_kd.kd.evaluate import frame_accuracies
from asr_kd.models import build_model
from asr_kd.models.checkpoint import save_checkpoint

T = 2.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory, frame_data):
    root = tmp_path_factory.mktemp("nonfinite_kd")
    data = frame_data.make_corpus(root / "data", num_train=24, num_valid=8)
    bad = frame_data.poison_features(data / "train.jsonl.gz", 3, math.nan)
    teachers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = frame_data.tiny_model_config()
        teachers.append(save_checkpoint(root / f"teacher-{seed}.pt", build_model(cfg).eval(), cfg))
    return {"root": root, "data": data, "bad": bad, "teachers": teachers, "frame_data": frame_data}


def test_cache_skips_the_nan_cut_by_id_and_counts_it(setup, caplog):
    cache_dir = setup["root"] / "cache"
    with caplog.at_level(logging.WARNING):
        merged = build_cache(setup["teachers"], setup["data"] / "train.jsonl.gz", cache_dir, temperature=T,
                             storage="topk", k=2, num_shards=2, device="cpu")  # fmt: skip
    info = read_metadata(cache_dir)["splits"]["train"]
    assert (info["num_cuts"], info["num_skipped"], info["skipped_cut_ids"]) == (23, 1, [setup["bad"]])
    cached = load_soft_target_cuts(cache_dir, "train")
    assert setup["bad"] not in cached.ids and len(CutSet.from_file(merged)) == 23
    assert any(f"cut {setup['bad']} skipped" in r.getMessage() and "not finite" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    # a rerun resumes: every shard is complete, the merge gives the same record
    build_cache(setup["teachers"], setup["data"] / "train.jsonl.gz", cache_dir, temperature=T, storage="topk", k=2,
                num_shards=2, device="cpu")  # fmt: skip
    assert read_metadata(cache_dir)["splits"]["train"] == info

    # distillation on the 24 training cuts: the cache covers them (the bad one is known as skipped), and
    # the trainer leaves that cut out too
    base = setup["frame_data"].tiny_config(setup["data"], setup["root"] / "student", num_epochs=1)
    summary = distill(DistillConfig.from_train_config(base, cache_dir=str(cache_dir), temperature=T, alpha=0.5))
    assert summary["skipped_cuts"] == [setup["bad"]]


def test_cache_fails_above_the_skipped_share(setup):
    with pytest.raises(TooManySkippedError, match=r"1 of 24 skipped"):
        build_cache(setup["teachers"], setup["data"] / "train.jsonl.gz", setup["root"] / "cache-strict",
                    temperature=T, storage="topk", k=2, num_shards=2, device="cpu", max_skipped_share=0.0)  # fmt: skip
    assert not (setup["root"] / "cache-strict" / "cuts_soft_train.jsonl.gz").exists()


def test_evaluate_skips_the_nan_cut_and_counts_it(setup):
    cuts = CutSet.from_file(setup["data"] / "train.jsonl.gz")
    result = frame_accuracies(setup["teachers"], setup["data"] / "train.jsonl.gz", device="cpu", batch_size=5)
    assert result["num_skipped"] == 1 and list(result["skipped"]) == [setup["bad"]]
    assert result["num_frames"] == sum(c.num_frames for c in cuts if c.id != setup["bad"])
    assert all(math.isfinite(a) for a in result["models"].values()) and math.isfinite(result["ensemble"])


def test_a_concurrent_cache_run_is_refused_by_the_lock(setup, lock_holder):
    """A second `asr-kd cache` of the same rank on one cache dir stops at once with the holder's pid (it
    used to fail on the first run's temporary shard with a raw 'No such file or directory')."""
    from asr_kd.guard import StageError

    cache_dir = setup["root"] / "cache-locked"
    holder = lock_holder(cache_dir, "cache-train-rank0")
    with pytest.raises(StageError, match=rf"is being written by another .* run \(pid {holder.pid}"):
        build_cache(setup["teachers"], setup["data"] / "train.jsonl.gz", cache_dir, temperature=T, storage="topk",
                    k=2, num_shards=2, device="cpu")  # fmt: skip
    assert not (cache_dir / "metadata.json").exists()
