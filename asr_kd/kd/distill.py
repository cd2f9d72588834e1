"""The distill stage: train a student on cached ensemble soft targets with the shared trainer.

Usage::

    from asr_kd.kd.distill import DistillConfig, distill
    from asr_kd.models import ModelConfig
    from asr_kd.trainer import DataConfig

    distill(DistillConfig(exp_dir="exp/my_recipe/student-kd", cache_dir="exp/my_recipe/cache-T2",
                          temperature=2.0, alpha=0.5,
                          model=ModelConfig(arch="tdnn", size="student-small", num_pdfs=87),
                          data=DataConfig(train_cuts="data/ali/my_corpus_cuts_train.jsonl.gz",
                                          valid_cuts="data/ali/my_corpus_cuts_dev.jsonl.gz")))
    # the hard-label student baseline: the same call with alpha=0 (cache_dir may be None; then
    # data.train_cuts, the aligned training cuts, are the training cuts)

Per frame (docs/design.md): ``L = α T² KL(p_T || q_T) + (1 − α) CE(y, q_1)``, averaged over non-padding frames
(``asr_kd.kd.losses``). The training cuts are always ``data.train_cuts`` (``--train-cuts``, the aligned
cuts); with α > 0 each batch's soft targets are looked up by cut id in the cache's merged train split
(``SoftTargetIndex``: any sampler, batch size, world size), and the cache must hold every training cut
(``check_cache_covers``: a cache of other cuts is refused, naming the counts). With
``data.transfer_cuts`` (``--transfer-cuts``) the student also trains on unlabeled cuts, whose soft targets
are the cache's ``transfer`` split (``asr-kd cache --split transfer``): their frames get the soft term
alone, the labeled frames the mixed loss (``asr_kd.kd.losses``, ``soft_only``). Validation is the
trainer's: hard-label frame accuracy and CE on ``data.valid_cuts``, which must not share a cut id with
the training cuts (the trainer refuses an overlap).

``DistillConfig`` *is* a ``TrainConfig`` (a subclass with the distillation fields), so everything the
trainer does (resumption, DDP under torchrun or ``world_size``, bf16, logs, ``done``) applies unchanged,
and the resolved config, with T, α and the cache's metadata hash, is in ``config.json`` and in every
checkpoint's ``train_config``. Reload it with ``DistillConfig.from_dict`` (``TrainConfig.from_dict``
rejects the extra fields). The cache is checked against the run before training: its temperature must be
T, its num_pdfs the model's, and its teachers ``teachers`` when given (``CacheMismatchError`` names the
field); resuming a run against a changed cache is refused by the trainer's config check (the hash differs).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from asr_kd.batch import IGNORE_INDEX
from asr_kd.kd.cache import (
    CacheMismatchError,
    SoftTargetBatch,
    SoftTargetIndex,
    check_cache_covers,
    collate_soft_targets,
    config_sha256,
    load_soft_target_cuts,
    merged_manifest_path,
    read_metadata,
)
from asr_kd.kd.ensemble import check_temperature
from asr_kd.kd.losses import distillation_terms
from asr_kd.models import ModelConfig
from asr_kd.trainer import TrainConfig, cross_entropy_loss, train
from asr_kd.trainer.data import ExtraField, read_cuts, training_subset

SOFT_TARGETS = "soft_targets"  # the training batch field holding a SoftTargetBatch
TRAIN_SPLIT = "train"  # the cache split whose cuts are trained on
TRANSFER_SPLIT = "transfer"  # the cache split of the unlabeled transfer cuts (data.transfer_cuts)


@dataclass
class DistillConfig(TrainConfig):
    """A ``TrainConfig`` (all of its fields, same meaning) plus the distillation settings."""

    STAGE: ClassVar[str] = "distill"  # the stage lock's name in exp_dir (not a field)

    cache_dir: str | None = None  # soft-target cache of the cache stage; None only when alpha == 0
    temperature: float = 2.0  # T of the soft targets and of the student's q_T; must equal the cache's T
    alpha: float = 0.5  # weight of the soft term in [0, 1]; 0: hard-label baseline (CE only, no cache read)
    sparse: bool = False  # top-k caches: True feeds (ids, probs) to the loss (B*T*k memory), False densifies
    teachers: list[str] | None = None  # teacher checkpoints the cache must come from (by sha256); None: unchecked
    cache_metadata_sha256: str | None = None  # resolved by distill(): sha256 of the cache's metadata.json

    @classmethod
    def from_train_config(cls, cfg: TrainConfig, **distill_fields: Any) -> "DistillConfig":
        """A ``TrainConfig``'s fields (deep-copied) with the given distillation fields."""
        values = {f.name: copy.deepcopy(getattr(cfg, f.name)) for f in fields(TrainConfig)}
        return cls(**{**values, **distill_fields})


class SoftTargetField:
    """Extra batch field (:mod:`asr_kd.trainer.data`): the batch cuts' soft targets, padded like the features.

    ``index``: where the targets are looked up by cut id (a ``SoftTargetIndex``); None: the batch's cuts
    carry the soft-target fields themselves. A module-level class, so that it pickles into DataLoader
    workers and spawned DDP ranks (the index is re-read there, once per process).
    """

    def __init__(self, sparse: bool = False, index: SoftTargetIndex | None = None) -> None:
        self.sparse, self.index = sparse, index

    def __call__(self, cuts, lengths: torch.Tensor) -> SoftTargetBatch:
        pad_to = int(lengths.max()) if len(lengths) else 0
        sources = self.index.cuts_of(cuts) if self.index is not None else list(cuts)
        targets = collate_soft_targets(sources, sparse=self.sparse, pad_to=pad_to)
        if not torch.equal(targets.num_frames, lengths):
            row = int((targets.num_frames != lengths).nonzero()[0])
            cut_id = list(cuts)[row].id
            raise CacheMismatchError(f"cut {cut_id} has {int(targets.num_frames[row])} soft-target frames but "
                                     f"{int(lengths[row])} feature frames")  # fmt: skip
        return targets


class DistillationLoss:
    """The trainer's ``loss_fn``: ``(logits (B, T, P) float32, batch) -> (mean loss, {"kl", "ce"} sums)``.

    ``kl`` is KL(p_T || q_T) summed over the frames (without the T² factor), ``ce`` CE(y, q_1) summed over
    the labeled frames; the trainer logs both per frame. With a transfer set the KL and the loss cover the
    unlabeled frames too: ``kl_frames`` and ``loss_frames`` count them (every frame that takes part), so
    that the logged KL per frame is over the frames it sums. α = 0 is exactly
    ``asr_kd.trainer.cross_entropy_loss`` (kl logged as 0).
    """

    def __init__(self, temperature: float, alpha: float, sparse: bool = False) -> None:
        self.temperature = check_temperature(temperature)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha, self.sparse = float(alpha), sparse

    def __call__(self, logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch["frame_labels"]
        if self.alpha == 0:
            loss, stats = cross_entropy_loss(logits, batch)  # the baseline, bit for bit
            return loss, {"kl": torch.zeros((), device=logits.device), **stats}
        targets: SoftTargetBatch = batch[SOFT_TARGETS]
        if self.sparse:
            soft = {"target_ids": targets.ids, "target_probs": targets.probs}
        else:
            soft = {"soft_targets": targets.probs}
        soft_only = unlabeled_frames(batch, logits.device)
        terms = distillation_terms(logits, labels, self.temperature, self.alpha, reduction="sum", soft_only=soft_only,
                                   **soft)  # fmt: skip
        ce = terms.ce
        if self.alpha == 1:  # not part of the loss; still logged, so that every run shows its CE
            with torch.no_grad():
                ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                                     reduction="sum")  # fmt: skip
        loss = terms.loss / max(terms.num_frames, 1)
        num_frames = torch.tensor(terms.num_frames, device=logits.device)
        stats = {"kl": terms.kl.detach(), "ce": ce.detach()}
        return loss, {**stats, "kl_frames": num_frames, "loss_frames": num_frames}


def unlabeled_frames(batch: dict, device: torch.device) -> torch.Tensor | None:
    """``(B, T)`` bool: the non-padding frames of the batch's unlabeled (transfer) cuts, from the
    dataset's ``labeled`` field; None when the batch has no such field (no transfer set)."""
    labeled = batch.get("labeled")
    if labeled is None:
        return None
    lengths = batch["lengths"].to(device)
    frames = torch.arange(batch["frame_labels"].shape[1], device=device)
    return (frames[None, :] < lengths[:, None]) & ~labeled.to(device)[:, None]


def resolve_distill_config(cfg: DistillConfig) -> tuple[DistillConfig, dict | None]:
    """Check ``cfg`` and its cache; returns (the resolved config that is trained and saved, the cache's
    metadata or None). Does not modify ``cfg``.

    α > 0: the cache must match (T, num_pdfs, teachers when given, a merged train split) and hold every
    cut trained on (``data.train_cuts``, or its ``train_fraction`` subset); ``cache_metadata_sha256``
    becomes its metadata hash. α = 0: the cache is not read; ``cache_dir`` and the hash resolve to None,
    so that the baseline's config does not depend on a cache. ``data.train_cuts`` is never changed.
    """
    if not isinstance(cfg, DistillConfig):
        raise TypeError(f"distill needs a DistillConfig, got {type(cfg).__name__}")
    if not isinstance(cfg.model, ModelConfig):
        raise ValueError(f"DistillConfig.model must be a ModelConfig (arch, size, num_pdfs), got {cfg.model!r}")
    temperature = check_temperature(cfg.temperature)
    if not (isinstance(cfg.alpha, (int, float)) and math.isfinite(cfg.alpha) and 0.0 <= cfg.alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1], got {cfg.alpha!r}")
    teachers = [str(t) for t in cfg.teachers] if cfg.teachers is not None else None
    if cfg.alpha == 0 and cfg.data.transfer_cuts:
        raise ValueError(f"the transfer cuts {cfg.data.transfer_cuts} are unlabeled: they need soft targets "
                         "(alpha > 0); a hard-label student (alpha 0) cannot train on them")  # fmt: skip
    if cfg.alpha == 0:
        if cfg.cache_dir is not None:
            logging.info(f"alpha = 0: hard-label baseline on {cfg.data.train_cuts}; the cache {cfg.cache_dir} "
                         "is not used")  # fmt: skip
        resolved = replace(cfg, data=copy.deepcopy(cfg.data), temperature=temperature, alpha=0.0, teachers=teachers,
                           cache_dir=None, cache_metadata_sha256=None)  # fmt: skip
        return resolved, None
    if cfg.cache_dir is None:
        raise ValueError(f"alpha = {cfg.alpha} > 0 needs soft targets: set cache_dir (or alpha = 0 for the "
                         "hard-label baseline)")  # fmt: skip
    expected: dict[str, Any] = {"temperature": temperature, "num_pdfs": cfg.model.num_pdfs}
    if teachers is not None:
        expected["teachers"] = teachers
    meta = read_metadata(cfg.cache_dir)
    # the merged manifest, read once here (checked against the metadata; CacheMismatchError); the trainer's
    # SoftTargetIndex reads it again in each process that looks targets up
    held = list(load_soft_target_cuts(cfg.cache_dir, TRAIN_SPLIT, expected=expected).ids)
    if cfg.sparse and meta["storage"] != "topk":
        raise CacheMismatchError(f"sparse=True needs a top-k cache; cache storage {meta['storage']!r} in "
                                 f"{cfg.cache_dir} (use sparse=False)")  # fmt: skip
    if not held:
        raise CacheMismatchError(f"the {TRAIN_SPLIT} split of {cfg.cache_dir} holds no cuts")
    check_cache_covers(cfg.cache_dir, TRAIN_SPLIT, list(training_subset(cfg.data).ids), held=held, meta=meta)
    if cfg.data.transfer_cuts:  # unlabeled cuts: their soft targets are in the cache's transfer split
        if TRANSFER_SPLIT not in meta.get("splits", {}):
            raise CacheMismatchError(f"{cfg.cache_dir} has no merged {TRANSFER_SPLIT!r} split for the transfer cuts "
                                     f"{cfg.data.transfer_cuts}: run asr-kd cache --split {TRANSFER_SPLIT} --cuts "
                                     f"{cfg.data.transfer_cuts} with the same teachers and cache dir")  # fmt: skip
        transfer_ids = list(read_cuts(cfg.data.transfer_cuts, lazy=True).ids)
        check_cache_covers(cfg.cache_dir, TRANSFER_SPLIT, transfer_ids, what="transfer", meta=meta)
    resolved = replace(cfg, data=copy.deepcopy(cfg.data), temperature=temperature, alpha=float(cfg.alpha),
                       teachers=teachers, cache_dir=str(cfg.cache_dir),
                       cache_metadata_sha256=config_sha256(meta))  # fmt: skip
    return resolved, meta


def distillation_plugins(cfg: DistillConfig) -> tuple[DistillationLoss, dict[str, ExtraField]]:
    """``(loss_fn, extra_fields)`` of ``asr_kd.trainer.train`` for a resolved config."""
    loss_fn = DistillationLoss(cfg.temperature, cfg.alpha, cfg.sparse)
    if cfg.alpha == 0:
        return loss_fn, {}
    splits = [TRAIN_SPLIT] + ([TRANSFER_SPLIT] if cfg.data.transfer_cuts else [])
    index = SoftTargetIndex(*(merged_manifest_path(cfg.cache_dir, split) for split in splits))
    extra = {SOFT_TARGETS: SoftTargetField(cfg.sparse, index)}
    return loss_fn, extra


def distill(cfg: DistillConfig, world_size: int | None = None) -> dict | None:
    """Train the student of ``cfg`` (module docstring). ``world_size``: as in ``asr_kd.trainer.train``.

    Returns the run summary (the ``done`` file), or None when stopped early by ``max_steps``.
    Raises CacheMismatchError when the cache does not hold what ``cfg`` asks for.
    """
    resolved, meta = resolve_distill_config(cfg)
    if meta is not None:
        logging.info(f"distilling from {resolved.cache_dir}: T={resolved.temperature}, alpha={resolved.alpha}, "
                     f"{len(meta['teachers'])} teachers, {meta['storage']} storage (k={meta['k']}), "
                     f"{'sparse' if resolved.sparse else 'dense'} loss")  # fmt: skip
    loss_fn, extra_fields = distillation_plugins(resolved)
    return train(resolved, world_size=world_size, loss_fn=loss_fn, extra_fields=extra_fields)


__all__ = ["SOFT_TARGETS", "TRANSFER_SPLIT", "DistillConfig", "DistillationLoss", "SoftTargetField", "distill",
           "distillation_plugins", "resolve_distill_config", "unlabeled_frames"]  # fmt: skip
