"""The distill stage on a tiny aligned corpus and a teacher-free soft-target cache."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from asr_kd.batch import IGNORE_INDEX
from asr_kd.kd.cache import (
    CacheMismatchError,
    cache_metadata,
    config_sha256,
    cut_ids_sha256,
    load_soft_target_cuts,
    merge_soft_target_shards,
    prepare_cache_dir,
    read_metadata,
    soft_targets_of,
    write_soft_target_shards,
)
from asr_kd.kd.distill import (
    SOFT_TARGETS,
    DistillationLoss,
    DistillConfig,
    SoftTargetField,
    distill,
    distillation_plugins,
    resolve_distill_config,
)
from asr_kd.kd.losses import distillation_loss
from asr_kd.models import load_checkpoint
from asr_kd.trainer import train
from asr_kd.trainer.data import FrameDataModule

T = 2.0
NUM_CLASSES = 4  # the frame_data kit's label count (checked in `setup`)


def label_posteriors(cuts):
    """A fixed function of the frame labels: soft targets peaked on the label, a second mode on label + 1."""
    out = []
    for cut in cuts:
        y = torch.from_numpy(cut.load_frame_labels().astype("int64"))
        z = 3.0 * torch.nn.functional.one_hot(y, NUM_CLASSES) + torch.nn.functional.one_hot((y + 1) % NUM_CLASSES,
                                                                                             NUM_CLASSES)  # fmt: skip
        out.append(torch.softmax(z.double() / T, dim=-1))
    return out


def build_cache(root: Path, corpus: Path, name: str, storage: str, k: int | None, cuts=None) -> Path:
    teachers = []
    for i in range(2):
        path = root / f"teacher-{i}.pt"
        if not path.exists():
            path.write_bytes(f"teacher {i}".encode())
        teachers.append(path)
    cache_dir = root / name
    prepare_cache_dir(cache_dir, cache_metadata(teachers, temperature=T, num_pdfs=NUM_CLASSES, storage=storage, k=k))
    cuts = list(load_cuts(corpus / "train.jsonl.gz")) if cuts is None else cuts
    write_soft_target_shards(cuts, label_posteriors, cache_dir, "train", num_shards=2, batch_size=8)
    merge_soft_target_shards(cache_dir, "train", 2, cuts=cuts, cuts_path=corpus / "train.jsonl.gz")
    return cache_dir


def load_cuts(path):
    from lhotse import CutSet

    return CutSet.from_file(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, frame_data):
    assert frame_data.num_classes == NUM_CLASSES
    root = tmp_path_factory.mktemp("distill")
    corpus = frame_data.make_corpus(root / "corpus", num_train=48, num_valid=12)
    topk = build_cache(root, corpus, "cache-topk", "topk", 2)
    dense = build_cache(root, corpus, "cache-dense", "dense", None)
    return {"root": root, "corpus": corpus, "topk": topk, "dense": dense, "tiny_config": frame_data.tiny_config,
            "teachers": [str(root / "teacher-0.pt"), str(root / "teacher-1.pt")]}  # fmt: skip


def kd_config(setup, exp_name: str, **fields) -> DistillConfig:
    base = setup["tiny_config"](setup["corpus"], setup["root"] / "exp" / exp_name, num_epochs=2)
    distill_fields = {"cache_dir": str(setup["topk"]), "temperature": T, "alpha": 0.5, **fields}
    return DistillConfig.from_train_config(base, **distill_fields)


def first_batch(cfg: DistillConfig) -> dict:
    resolved, _ = resolve_distill_config(cfg)
    _, extra = distillation_plugins(resolved)
    return next(iter(FrameDataModule(resolved.data, seed=resolved.seed, extra_fields=extra).train_dataloader(1)))


@pytest.mark.parametrize("cache, sparse", [("topk", False), ("topk", True), ("dense", False)])
def test_plugged_loss_equals_hand_computation(setup, cache, sparse):
    alpha = 0.3
    cfg = kd_config(setup, "unused", cache_dir=str(setup[cache]), sparse=sparse, alpha=alpha)
    batch = first_batch(cfg)
    labels, lengths = batch["frame_labels"], batch["lengths"]
    assert lengths.min() < lengths.max()  # the batch has padding
    logits = torch.randn(*labels.shape, NUM_CLASSES, generator=torch.Generator().manual_seed(0)) * 2
    logits[labels == IGNORE_INDEX] = float("nan")  # padding must not matter at all
    logits.requires_grad_(True)
    loss, stats = DistillationLoss(T, alpha, sparse)(logits, batch)
    loss_value = float(loss.detach())

    # by hand, with the soft targets looked up by cut id in the cache (not through the batch)
    by_id = {c.id: c for c in load_soft_target_cuts(setup[cache], "train")}
    kl = ce = 0.0
    for i, cut_id in enumerate(batch["cut_ids"]):
        n = int(lengths[i])
        p = torch.from_numpy(soft_targets_of(by_id[cut_id])).double()
        z = logits[i, :n].detach().double()
        kl += float((torch.xlogy(p, p) - p * torch.log_softmax(z / T, -1)).sum())
        ce += float(-torch.log_softmax(z, -1).gather(1, labels[i, :n, None]).sum())
    frames = int(lengths.sum())
    expected = (alpha * T * T * kl + (1 - alpha) * ce) / frames
    assert loss_value == pytest.approx(expected, rel=1e-5)
    assert float(stats["kl"]) == pytest.approx(kl, rel=1e-5) and float(stats["ce"]) == pytest.approx(ce, rel=1e-5)
    # the library's mean loss on the same tensors (dense targets)
    dense_targets = torch.zeros(*labels.shape, NUM_CLASSES)
    for i, cut_id in enumerate(batch["cut_ids"]):
        dense_targets[i, : int(lengths[i])] = torch.from_numpy(soft_targets_of(by_id[cut_id]))
    assert loss_value == pytest.approx(float(distillation_loss(logits.detach(), dense_targets, labels, T, alpha)), rel=1e-5)
    loss.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all() and (grad[labels == IGNORE_INDEX] == 0).all()

    # α = 1: pure T²-scaled KL (CE still logged); α = 0: plain CE, soft targets unused
    loss1, stats1 = DistillationLoss(T, 1.0, sparse)(logits.detach(), batch)
    assert float(loss1) == pytest.approx(T * T * kl / frames, rel=1e-5)
    assert float(stats1["ce"]) == pytest.approx(ce, rel=1e-5)
    loss0, stats0 = DistillationLoss(T, 0.0, sparse)(logits.detach(), {**batch, SOFT_TARGETS: None})
    assert float(loss0) == pytest.approx(ce / frames, rel=1e-5) and float(stats0["kl"]) == 0


def test_alpha_zero_is_the_hard_label_baseline_bit_for_bit(setup):
    plain_cfg = setup["tiny_config"](setup["corpus"], setup["root"] / "exp" / "plain", num_epochs=2)
    plain_summary = train(plain_cfg)
    for name, cache_dir in (("a0-nocache", None), ("a0-cache", str(setup["topk"]))):
        cfg = kd_config(setup, name, alpha=0.0, cache_dir=cache_dir)
        summary = distill(cfg)
        assert summary == plain_summary
        for ckpt in ("epoch-2.pt", "best-valid-acc.pt"):
            a = load_checkpoint(Path(plain_cfg.exp_dir) / ckpt).state_dict
            b = load_checkpoint(Path(cfg.exp_dir) / ckpt).state_dict
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), (ckpt, key)
        saved = json.loads((Path(cfg.exp_dir) / "config.json").read_text())
        assert saved["alpha"] == 0.0 and saved["cache_dir"] is None and saved["cache_metadata_sha256"] is None
        assert saved["data"]["train_cuts"] == plain_cfg.data.train_cuts


@pytest.mark.parametrize(
    "fields, error, match",
    [
        ({"temperature": 3.0}, CacheMismatchError, "temperature"),
        ({"teachers": ["OTHER"]}, CacheMismatchError, "teachers"),
        ({"model_num_pdfs": NUM_CLASSES + 1}, CacheMismatchError, "num_pdfs"),
        ({"cache": "dense", "sparse": True}, CacheMismatchError, "sparse"),
        ({"cache_dir": None}, ValueError, "cache_dir"),
        ({"alpha": 1.5}, ValueError, "alpha"),
    ],
)
def test_mismatching_cache_or_settings_are_refused(setup, fields, error, match):
    fields = dict(fields)
    if fields.get("teachers") == ["OTHER"]:
        other = setup["root"] / "other-teacher.pt"
        other.write_bytes(b"another teacher")
        fields["teachers"] = [setup["teachers"][0], str(other)]
    num_pdfs = fields.pop("model_num_pdfs", None)
    if "cache" in fields:
        fields["cache_dir"] = str(setup[fields.pop("cache")])
    cfg = kd_config(setup, "refused", **fields)
    if num_pdfs is not None:
        cfg.model.num_pdfs = num_pdfs
    with pytest.raises(error, match=match):
        distill(cfg)
    assert not Path(cfg.exp_dir).exists()  # refused before anything is written


def test_matching_teachers_are_accepted(setup):
    cfg = kd_config(setup, "unused", teachers=setup["teachers"])
    resolved, meta = resolve_distill_config(cfg)
    assert resolved.teachers == setup["teachers"] and meta["num_pdfs"] == NUM_CLASSES
    assert cfg.cache_metadata_sha256 is None and cfg.data.train_cuts.endswith("train.jsonl.gz")  # cfg untouched


def test_soft_targets_must_cover_every_feature_frame(setup):
    cuts = list(load_soft_target_cuts(setup["topk"], "train"))[:3]
    lengths = torch.tensor([c.num_frames for c in cuts])
    assert SoftTargetField()(cuts, lengths).probs.shape == (3, int(lengths.max()), NUM_CLASSES)
    lengths[1] += 1
    with pytest.raises(CacheMismatchError, match=f"cut {cuts[1].id} has .* soft-target frames"):
        SoftTargetField(sparse=True)(cuts, lengths)


def test_plugins_pickle(setup):
    resolved, _ = resolve_distill_config(kd_config(setup, "unused", sparse=True))
    loss_fn, extra = distillation_plugins(resolved)
    loss_fn2, extra2 = pickle.loads(pickle.dumps((loss_fn, extra)))  # DataLoader workers, spawned DDP ranks
    assert loss_fn2.alpha == 0.5 and extra2[SOFT_TARGETS].sparse


@pytest.mark.parametrize("sparse, workers", [(False, 0), (True, 2)])
def test_short_distillation_run(setup, sparse, workers):
    cfg = kd_config(setup, f"kd-sparse{int(sparse)}", sparse=sparse, lr=3e-2)
    cfg.data.num_workers = workers
    summary = distill(cfg)
    exp = Path(cfg.exp_dir)
    for name in ("done", "best-valid-acc.pt", "epoch-2.pt", "last.pt", "config.json"):
        assert (exp / name).is_file(), name
    assert summary["best_valid_frame_acc"] > 1 / NUM_CLASSES + 0.2  # learns (chance 0.25)
    sha = config_sha256(read_metadata(setup["topk"]))
    for name in ("best-valid-acc.pt", "epoch-2.pt"):
        saved = load_checkpoint(exp / name).extra["train_config"]
        assert saved["temperature"] == T and saved["alpha"] == 0.5 and saved["sparse"] == sparse
        assert saved["cache_metadata_sha256"] == sha and saved["cache_dir"] == str(setup["topk"])
        assert saved["data"]["train_cuts"] == str(setup["corpus"] / "train.jsonl.gz")  # --train-cuts, not the cache
    assert DistillConfig.from_dict(json.loads((exp / "config.json").read_text())).alpha == 0.5
    assert distill(cfg) == summary  # a finished run is not trained again
    with pytest.raises(ValueError, match="alpha"):  # nor continued with other distillation settings
        distill(kd_config(setup, f"kd-sparse{int(sparse)}", sparse=sparse, lr=3e-2, alpha=0.7,
                          data=cfg.data))  # fmt: skip


@pytest.mark.slow
def test_distillation_under_ddp(setup):
    """Two spawned gloo ranks: the plug-ins pickle, each rank looks up its own batches' soft targets."""
    cfg = kd_config(setup, "kd-ddp", num_epochs=1, save_every_n=0)
    summary = distill(cfg, world_size=2)
    assert summary is not None and summary["steps"] > 0
    final = load_checkpoint(Path(cfg.exp_dir) / "epoch-1.pt")
    assert len(final.extra["rng"]) == 2 and final.extra["train_config"]["alpha"] == 0.5


def test_cache_metadata_names_its_cuts(setup):
    info = read_metadata(setup["topk"])["splits"]["train"]
    ids = load_cuts(setup["corpus"] / "train.jsonl.gz").ids
    assert info["cuts_path"] == str(setup["corpus"] / "train.jsonl.gz")
    assert info["num_cuts"] == 48 and info["cut_ids_sha256"] == cut_ids_sha256(ids)


def test_the_cache_manifest_is_read_once_to_resolve_the_run(setup, monkeypatch):
    from lhotse import CutSet

    from asr_kd.kd.cache import merged_manifest_path

    manifest = str(merged_manifest_path(setup["topk"], "train"))
    reads: list[str] = []
    from_file = CutSet.from_file

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return from_file(path, *args, **kwargs)

    monkeypatch.setattr(CutSet, "from_file", counted)
    resolved, meta = resolve_distill_config(kd_config(setup, "unused"))
    assert reads.count(manifest) == 1 and meta["splits"]["train"]["num_cuts"] == 48
    assert resolved.cache_metadata_sha256 == config_sha256(meta)


def test_cache_of_other_cuts_is_refused_with_counts(setup):
    """A cache built from 40 of the 48 training cuts (or from the dev cuts) cannot train on the 48."""
    train_cuts = list(load_cuts(setup["corpus"] / "train.jsonl.gz"))
    partial = build_cache(setup["root"], setup["corpus"], "cache-partial", "topk", 2, cuts=train_cuts[:40])
    cfg = kd_config(setup, "refused-partial", cache_dir=str(partial))
    with pytest.raises(CacheMismatchError, match=r"does not cover the training cuts: 8 of 48 have no soft targets"):
        distill(cfg)
    assert not Path(cfg.exp_dir).exists()
    valid_cuts = list(load_cuts(setup["corpus"] / "valid.jsonl.gz"))
    dev_cache = build_cache(setup["root"], setup["corpus"], "cache-dev", "topk", 2, cuts=valid_cuts)
    with pytest.raises(CacheMismatchError, match=r"48 of 48 have no soft targets"):
        distill(kd_config(setup, "refused-dev", cache_dir=str(dev_cache)))


def test_trains_on_train_cuts_and_looks_targets_up_by_id(setup, frame_data):
    """A cache holding more cuts than --train-cuts: only the training cuts are trained on, each batch's
    targets are those of its own cut ids, and a 3% subset works against the full cache."""
    extra = frame_data.make_cuts(setup["root"] / "extra", "extra", 6, seed=3)
    cuts = sorted([*load_cuts(setup["corpus"] / "train.jsonl.gz"), *load_cuts(extra)], key=lambda c: c.id)
    superset = build_cache(setup["root"], setup["corpus"], "cache-superset", "topk", 2, cuts=cuts)
    train_ids = set(load_cuts(setup["corpus"] / "train.jsonl.gz").ids)
    for fraction, expected in ((1.0, 48), (0.03, 2)):
        cfg = kd_config(setup, "unused", cache_dir=str(superset))
        cfg.data.train_fraction = fraction
        resolved, _ = resolve_distill_config(cfg)
        _, extra_fields = distillation_plugins(resolved)
        dm = FrameDataModule(resolved.data, seed=resolved.seed, extra_fields=extra_fields)
        seen = []
        by_id = {c.id: c for c in load_soft_target_cuts(superset, "train")}
        for batch in dm.train_dataloader(1):
            seen += batch["cut_ids"]
            for i, cut_id in enumerate(batch["cut_ids"]):
                n = int(batch["lengths"][i])
                want = torch.from_numpy(soft_targets_of(by_id[cut_id]))
                assert torch.equal(batch[SOFT_TARGETS].probs[i, :n], want)
        assert len(seen) == len(set(seen)) == expected and set(seen) <= train_ids


def test_validation_on_training_cuts_is_refused(setup):
    cfg = kd_config(setup, "refused-overlap")
    cfg.data.valid_cuts = cfg.data.train_cuts
    with pytest.raises(ValueError, match=r"48 of the 48 validation cuts .* are also among the 48 training cuts"):
        distill(cfg)
    assert not Path(cfg.exp_dir).exists()
    plain = setup["tiny_config"](setup["corpus"], setup["root"] / "exp" / "plain-overlap")
    plain.data.valid_cuts = plain.data.train_cuts
    with pytest.raises(ValueError, match="validation cuts"):
        train(plain)
