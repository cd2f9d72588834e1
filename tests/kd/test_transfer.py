"""Distillation on a transfer set: labeled training cuts plus unlabeled cuts (no frame_labels) whose soft
targets are the cache's ``transfer`` split; unlabeled frames get the soft term only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from lhotse import CutSet

from asr_kd.batch import IGNORE_INDEX
from asr_kd.kd.cache import (
    CacheMismatchError,
    SoftTargetBatch,
    build_cache,
    load_soft_target_cuts,
    read_metadata,
    soft_targets_of,
)
from asr_kd.kd.distill import (
    SOFT_TARGETS,
    TRANSFER_SPLIT,
    DistillationLoss,
    DistillConfig,
    distill,
    distillation_plugins,
    resolve_distill_config,
)
from asr_kd.models import build_model, load_checkpoint
from asr_kd.models.checkpoint import save_checkpoint
from asr_kd.trainer.data import FrameDataModule
from asr_kd.trainer.loop import compute_loss
from asr_kd.trainer.session import per_frame

T = 2.0


def unlabeled(path: Path) -> Path:
    """The cuts of ``path`` without their frame_labels (what an untranscribed transfer split looks like)."""
    cuts = [c for c in CutSet.from_file(path)]
    for c in cuts:
        c.custom = None
    out = path.with_name("transfer_unlabeled.jsonl.gz")
    CutSet.from_cuts(cuts).to_file(out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, frame_data):
    root = tmp_path_factory.mktemp("transfer")
    data = frame_data.make_corpus(root / "data", num_train=24, num_valid=8)
    transfer = unlabeled(frame_data.make_cuts(root / "data", "transfer", 12, seed=9))
    teachers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = frame_data.tiny_model_config()
        teachers.append(save_checkpoint(root / f"teacher-{seed}.pt", build_model(cfg).eval(), cfg))
    cache = root / "cache"
    build_cache(teachers, data / "train.jsonl.gz", cache, temperature=T, storage="dense", num_shards=2, device="cpu")
    # the cache stage on cuts that have no frame_labels at all: the transfer split of the same cache
    build_cache(teachers, transfer, cache, split=TRANSFER_SPLIT, temperature=T, storage="dense", num_shards=2,
                device="cpu")  # fmt: skip
    return {"root": root, "data": data, "transfer": transfer, "cache": cache, "teachers": teachers,
            "frame_data": frame_data}  # fmt: skip


def config(setup, name: str, **fields) -> DistillConfig:
    base = setup["frame_data"].tiny_config(setup["data"], setup["root"] / "exp" / name, num_epochs=2)
    base.data.transfer_cuts = str(setup["transfer"])
    return DistillConfig.from_train_config(base, **{"cache_dir": str(setup["cache"]), "temperature": T,
                                                    "alpha": 0.5, **fields})  # fmt: skip


def test_cache_holds_the_unlabeled_cuts_by_id(setup):
    info = read_metadata(setup["cache"])["splits"][TRANSFER_SPLIT]
    assert info["num_cuts"] == 12 and info["cuts_path"] == str(setup["transfer"])
    cached = load_soft_target_cuts(setup["cache"], TRANSFER_SPLIT)
    assert sorted(cached.ids) == sorted(CutSet.from_file(setup["transfer"]).ids)
    assert not any(c.has_custom("frame_labels") for c in CutSet.from_file(setup["transfer"]))


def test_a_mixed_batch_against_the_loss_by_hand(setup):
    alpha = 0.3
    resolved, _ = resolve_distill_config(config(setup, "unused", alpha=alpha))
    _, extra = distillation_plugins(resolved)
    dm = FrameDataModule(resolved.data, seed=resolved.seed, extra_fields=extra)
    transfer_ids = set(CutSet.from_file(setup["transfer"]).ids)
    by_id = {c.id: c for split in ("train", TRANSFER_SPLIT) for c in load_soft_target_cuts(setup["cache"], split)}
    seen, mixed = [], 0
    for batch in dm.train_dataloader(1):
        seen += batch["cut_ids"]
        labeled = batch["labeled"]
        assert [not x for x in labeled.tolist()] == [c in transfer_ids for c in batch["cut_ids"]]
        assert (batch["frame_labels"][~labeled] == IGNORE_INDEX).all()
        if labeled.all() or not labeled.any():
            continue
        mixed += 1
        lengths = batch["lengths"]
        logits = torch.randn(*batch["frame_labels"].shape, 4, generator=torch.Generator().manual_seed(mixed)) * 2
        loss, stats = DistillationLoss(T, alpha)(logits, batch)
        kl = ce = 0.0
        for i, cut_id in enumerate(batch["cut_ids"]):
            n = int(lengths[i])
            p = torch.from_numpy(soft_targets_of(by_id[cut_id])).double()
            assert torch.allclose(batch[SOFT_TARGETS].probs[i, :n].double(), p)  # looked up by id
            z = logits[i, :n].double()
            kl += float((torch.xlogy(p, p) - p * torch.log_softmax(z / T, -1)).sum())
            if labeled[i]:  # the hard term on labeled cuts only
                ce += float(-torch.log_softmax(z, -1).gather(1, batch["frame_labels"][i, :n, None]).sum())
        frames = int(lengths.sum())  # every non-padding frame, labeled or not
        assert float(loss) == pytest.approx((alpha * T * T * kl + (1 - alpha) * ce) / frames, rel=1e-5)
        assert float(stats["kl"]) == pytest.approx(kl, rel=1e-5) and float(stats["ce"]) == pytest.approx(ce, rel=1e-5)
    assert mixed >= 1
    assert len(seen) == len(set(seen)) == 24 + 12  # every labeled and unlabeled cut once per epoch


class ZeroLogits(torch.nn.Module):
    def forward(self, features, lengths):  # (B, T, 2) zeros: q_T and q_1 uniform over 2 pdfs
        return torch.zeros(*features.shape[:2], 2) + 0 * features.sum()


def test_logged_kl_and_loss_are_per_frame_of_the_frames_they_cover():
    # cut a labeled (2 frames, label 0), cut b unlabeled (2 frames); every soft target (1, 0), logits 0:
    # KL = ln 2 on each of the 4 frames, CE = ln 2 on each of the 2 labeled frames
    batch = {"features": torch.zeros(2, 2, 3), "lengths": torch.tensor([2, 2]), "cut_ids": ["a", "b"],
             "frame_labels": torch.tensor([[0, 0], [IGNORE_INDEX, IGNORE_INDEX]]),
             "labeled": torch.tensor([True, False]),
             SOFT_TARGETS: SoftTargetBatch(torch.tensor([1.0, 0.0]).repeat(2, 2, 1), None, torch.tensor([2, 2]))}  # fmt: skip
    alpha, ln2 = 0.5, math.log(2)
    loss, stats = compute_loss(ZeroLogits(), batch, torch.device("cpu"), DistillationLoss(T, alpha))
    assert float(loss) == pytest.approx((alpha * T * T * 4 * ln2 + (1 - alpha) * 2 * ln2) / 4)  # 9/4 ln 2
    logged = per_frame({k: float(v) for k, v in stats.items()})
    assert logged["kl"] == pytest.approx(ln2)  # 4 ln 2 over 4 frames (not over the 2 labeled ones: 2 ln 2)
    assert logged["ce"] == pytest.approx(ln2)  # 2 ln 2 over the 2 labeled frames
    assert stats["loss"].item() == pytest.approx(4 * float(loss))  # a sum over the 4 frames the mean is over
    assert logged["loss"] == pytest.approx(float(loss)) and logged["frames"] == 2


def test_short_run_with_a_transfer_set(setup):
    cfg = config(setup, "kd-transfer", num_epochs=1)
    summary = distill(cfg)
    assert summary is not None and summary["steps"] > 0
    saved = load_checkpoint(Path(cfg.exp_dir) / "best-valid-acc.pt").extra["train_config"]
    assert saved["data"]["transfer_cuts"] == str(setup["transfer"]) and saved["alpha"] == 0.5
    assert json.loads((Path(cfg.exp_dir) / "config.json").read_text())["data"]["transfer_cuts"] == str(setup["transfer"])


def test_transfer_set_refusals(setup, frame_data):
    with pytest.raises(ValueError, match=r"unlabeled: they need soft targets \(alpha > 0\)"):
        distill(config(setup, "refused-a0", alpha=0.0, cache_dir=None))
    plain = setup["root"] / "cache-no-transfer"
    build_cache(setup["teachers"], setup["data"] / "train.jsonl.gz", plain, temperature=T, storage="dense",
                num_shards=1, device="cpu")  # fmt: skip
    with pytest.raises(CacheMismatchError, match=r"no merged 'transfer' split .* asr-kd cache --split transfer"):
        distill(config(setup, "refused-nosplit", cache_dir=str(plain)))
    cfg = config(setup, "refused-overlap")
    cfg.data.transfer_cuts = str(setup["data"] / "train.jsonl.gz")  # the training cuts again
    with pytest.raises((ValueError, CacheMismatchError)):
        distill(cfg)
    for name in ("refused-a0", "refused-nosplit", "refused-overlap"):
        assert not (setup["root"] / "exp" / name / "done").exists()
