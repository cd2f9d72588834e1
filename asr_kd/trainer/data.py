"""The trainer's data: lhotse samplers, frame batches (:mod:`asr_kd.batch`), SpecAugment, DataLoaders.

Usage::

    from asr_kd.trainer import DataConfig, FrameDataModule

    dm = FrameDataModule(DataConfig(train_cuts="data/ali/cuts_train.jsonl.gz",
                                    valid_cuts="data/ali/cuts_dev.jsonl.gz", max_duration=200))
    for batch in dm.train_dataloader(epoch=1):
        batch["features"]      # (B, T, 80) float32, zero-padded
        batch["lengths"]       # (B,) int64, frames
        batch["frame_labels"]  # (B, T) int64 pdf ids, IGNORE_INDEX (-100) on padding
        batch["cut_ids"]       # list of B cut ids, in the row order of the tensors
        batch["skipped"]       # {cut id: reason} of the sampled cuts left out (non-finite features)

A cut whose features hold NaN or inf is left out of its batch (``batch["skipped"]`` names it; the
training loop counts and logs it); a batch may then be empty (``cut_ids == []``).

Extra per-batch fields (the distillation stage's soft targets) plug in as ``extra_fields``: a dict
``name -> fn(cuts, lengths)`` whose results land in ``batch[name]``; ``cuts`` is the batch's ``CutSet``
in row order and ``lengths`` the ``(B,)`` frame counts.

Exact resumption: the train dataloader can skip the first ``skip_batches`` batches of an epoch without
loading their features (see ``ResumableSampler``); SpecAugment draws its masks from a generator seeded by
(seed, epoch, cut ids), so a batch is augmented identically whichever worker or run builds it.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import re
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler
from lhotse.dataset.sampling.base import CutSampler
from lhotse.utils import fastcopy
from torch.utils.data import DataLoader, Dataset

from asr_kd.batch import IGNORE_INDEX, NonFiniteFeaturesError, load_cut, pad_frames
from asr_kd.trainer.config import DataConfig

ExtraField = Callable[[CutSet, torch.Tensor], Any]  # fn(cuts, lengths (B,)) -> a batch field
SKIPPED = "skipped"  # batch field: {cut id: reason} of the batch's cuts left out (non-finite features)
DUPLICATE_ID = re.compile(r"_dup\d+$")  # lhotse's suffix on cuts repeated to give every DDP rank a batch


def read_cuts(cuts: CutSet | str | Path, lazy: bool = False) -> CutSet:
    """A ``CutSet`` as is, or read from a manifest path (lazily for streaming samplers)."""
    if isinstance(cuts, CutSet):
        return cuts
    path = Path(cuts)
    if not path.is_file():
        raise FileNotFoundError(f"cuts manifest {path} does not exist: run the align stage first")
    return CutSet.from_jsonl_lazy(path) if lazy else CutSet.from_file(path)


class SpecAugment:
    """Frequency and time masking of one utterance's features with torchaudio's transforms.

    Masks are filled with the utterance's mean feature value (log-mel zero is not "silence").
    """

    def __init__(self, num_freq_masks: int, freq_mask_width: int, num_time_masks: int, time_mask_width: int,
                 time_mask_max_ratio: float) -> None:  # fmt: skip
        import torchaudio.transforms as T

        self.freq_masks = [T.FrequencyMasking(freq_mask_width) for _ in range(num_freq_masks)]
        self.time_masks = [T.TimeMasking(time_mask_width, p=time_mask_max_ratio) for _ in range(num_time_masks)]

    @classmethod
    def from_config(cls, cfg: DataConfig) -> "SpecAugment":
        return cls(cfg.num_freq_masks, cfg.freq_mask_width, cfg.num_time_masks, cfg.time_mask_width,
                   cfg.time_mask_max_ratio)  # fmt: skip

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """features: (T, F) -> masked copy (T, F). Uses torch's global CPU generator."""
        spec = features.t().clone()  # torchaudio masks (..., freq, time)
        fill = float(spec.mean())
        for mask in self.freq_masks:
            spec = mask(spec, mask_value=fill)
        for mask in self.time_masks:
            spec = mask(spec, mask_value=fill)
        return spec.t()


def ignore_duplicates(batch: dict[str, Any]) -> dict[str, Any]:
    """Set the frame labels of lhotse's DDP padding duplicates (ids ``..._dup<k>``) to IGNORE_INDEX, so
    that sharded evaluation counts every cut once."""
    rows = [i for i, cut_id in enumerate(batch["cut_ids"]) if DUPLICATE_ID.search(cut_id)]
    if rows and "frame_labels" in batch:
        batch["frame_labels"][rows] = IGNORE_INDEX
    return batch


def batch_seed(seed: int, epoch: int, cut_ids: list[str]) -> int:
    """A seed that depends only on the run's seed, the epoch and the batch's cuts."""
    return zlib.crc32("\n".join(cut_ids).encode(), (seed * 1_000_003 + epoch) & 0xFFFFFFFF)


class FrameDataset(Dataset):
    """Map-style lhotse dataset: ``dataset[cuts]`` -> a padded frame-level batch (module docstring).

    Rows keep the order of ``cuts``. ``with_labels=False`` leaves out ``frame_labels`` (cuts without
    alignments, e.g. for computing teacher posteriors on unlabelled data); ``with_labels="optional"``
    (training on a transfer set) loads the labels of the cuts that have them, gives the others
    IGNORE_INDEX and adds ``labeled``, a ``(B,)`` bool: which rows are labeled cuts.
    """

    def __init__(self, spec_augment: SpecAugment | None = None, extra_fields: Mapping[str, ExtraField] | None = None,
                 with_labels: bool | str = True, seed: int = 0) -> None:  # fmt: skip
        if with_labels not in (True, False, "optional"):
            raise ValueError(f"with_labels must be True, False or 'optional', got {with_labels!r}")
        self.spec_augment = spec_augment
        self.extra_fields = dict(extra_fields or {})
        for name in self.extra_fields:
            if name in ("features", "lengths", "frame_labels", "cut_ids", "labeled", SKIPPED):
                raise ValueError(f"extra field {name!r} would overwrite a built-in batch field")
        self.with_labels = with_labels
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Picked up by DataLoader workers started after the call (workers are not persistent)."""
        self.epoch = epoch

    def __getitem__(self, cuts: CutSet) -> dict[str, Any]:
        cut_list, loaded, skipped = [], [], {}
        for cut in cuts:
            try:
                mode = "optional" if self.with_labels == "optional" else "required" if self.with_labels else "none"
                loaded.append(load_cut(cut, mode))
            except NonFiniteFeaturesError as e:  # a bad utterance: left out, reported to the loop by id
                skipped[cut.id] = str(e)
                continue
            cut_list.append(cut)
        feats = [f for f, _ in loaded]
        if self.spec_augment is not None:
            feats = self._augment(feats, [c.id for c in cut_list])
        labels = [y for _, y in loaded] if self.with_labels else None
        if cut_list:
            batch = pad_frames(feats, labels, [c.id for c in cut_list])
        else:  # every cut of the batch was left out
            batch = {"features": torch.zeros(0, 0, 0), "lengths": torch.zeros(0, dtype=torch.int64), "cut_ids": []}
            if self.with_labels:
                batch["frame_labels"] = torch.zeros(0, 0, dtype=torch.int64)
        if self.with_labels == "optional":
            batch["labeled"] = torch.tensor([y is not None for _, y in loaded], dtype=torch.bool)
        kept = CutSet.from_cuts(cut_list) if skipped else cuts
        for name, fn in self.extra_fields.items():
            batch[name] = fn(kept, batch["lengths"]) if cut_list else None
        batch[SKIPPED] = skipped
        return batch

    def _augment(self, feats: list[torch.Tensor], cut_ids: list[str]) -> list[torch.Tensor]:
        # fork the CPU generator: the masks never perturb the training process's random stream
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(batch_seed(self.seed, self.epoch, cut_ids))
            return [self.spec_augment(f) for f in feats]


class ResumableSampler:
    """Wraps a lhotse sampler; each ``iter()`` starts the epoch set by ``set_epoch`` after skipping
    ``skip_batches`` batches (metadata only: no features are read), then resets the skip to 0.

    Why not ``sampler.load_state_dict``: lhotse counts the batches the sampler *produced*, which runs
    ahead of the batches the training loop *consumed* by ``num_workers * prefetch_factor`` when the
    DataLoader prefetches; counting consumed batches resumes at exactly the next unseen batch.
    """

    def __init__(self, sampler: CutSampler) -> None:
        self.sampler = sampler
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def __iter__(self) -> Iterator[CutSet]:
        self.sampler.set_epoch(self.epoch)
        self.sampler.allow_iter_to_reset_state()
        it = iter(self.sampler)  # a lhotse sampler is its own iterator: `yield from` would restart it
        skip, self.skip_batches = self.skip_batches, 0
        for i in range(skip):
            if next(it, None) is None:
                raise ValueError(f"cannot skip {skip} batches: epoch {self.epoch} has only {i}")
        while (batch := next(it, None)) is not None:
            yield batch


def training_subset(cfg: DataConfig) -> CutSet:
    """The training cuts, or the ``cfg.train_fraction`` share of them picked by ``cfg.subset_seed``.

    The subset depends only on the cut ids, the fraction and the subset seed, so the hard-label and the
    distilled student of the 3% experiment see the same utterances (the cache's cuts have the same ids as
    the aligned ones) whatever their training seed.
    """
    if not 0.0 < cfg.train_fraction <= 1.0:
        raise ValueError(f"DataConfig.train_fraction must be in (0, 1], got {cfg.train_fraction}")
    if cfg.train_fraction == 1.0:
        return read_cuts(cfg.train_cuts, lazy=True)
    cuts = read_cuts(cfg.train_cuts)
    ids = sorted(cuts.ids)
    keep = random.Random(cfg.subset_seed).sample(ids, max(1, math.ceil(cfg.train_fraction * len(ids))))
    subset = cuts.subset(cut_ids=sorted(keep))
    hours, total = sum(c.duration for c in subset) / 3600, sum(c.duration for c in cuts) / 3600
    logging.info(f"training on {len(keep)} of {len(ids)} cuts ({hours:.3f} h of {total:.3f} h, "
                 f"train_fraction {cfg.train_fraction}, subset_seed {cfg.subset_seed})")
    return subset


def without_frame_labels(cut):
    """``cut`` without its ``frame_labels`` field (a transfer cut is unlabeled by definition)."""
    if cut.custom and "frame_labels" in cut.custom:
        return fastcopy(cut, custom={k: v for k, v in cut.custom.items() if k != "frame_labels"} or None)
    return cut


def training_cuts(cfg: DataConfig) -> CutSet:
    """What the training loop samples: ``training_subset(cfg)``, plus with ``cfg.transfer_cuts`` the
    transfer set's cuts (all of them, whatever the fraction; their frame labels dropped), interleaved at
    random in proportion to the two sizes (``CutSet.mux`` seeded by ``subset_seed``). Cut ids must be
    distinct across the two sets (the soft targets are looked up by id)."""
    cuts = training_subset(cfg)
    if not cfg.transfer_cuts:
        return cuts
    transfer = read_cuts(cfg.transfer_cuts, lazy=True)
    labeled_ids = set(cuts.ids)
    transfer_ids = list(transfer.ids)
    shared = sorted(labeled_ids.intersection(transfer_ids))
    if shared:
        raise ValueError(f"{len(shared)} transfer cuts ({cfg.transfer_cuts}) have the id of a training cut "
                         f"({cfg.train_cuts}), e.g. {shared[:3]}: the transfer set must be other utterances")  # fmt: skip
    if not transfer_ids:
        raise ValueError(f"the transfer cuts {cfg.transfer_cuts} are empty")
    logging.info(f"training on {len(labeled_ids)} labeled cuts and {len(transfer_ids)} unlabeled transfer cuts "
                 f"({cfg.transfer_cuts}; soft targets only)")  # fmt: skip
    return CutSet.mux(cuts, transfer.map(without_frame_labels), weights=[len(labeled_ids), len(transfer_ids)],
                      seed=cfg.subset_seed)  # fmt: skip


def check_disjoint(cfg: DataConfig) -> None:
    """Raise ValueError when a validation cut id is also a training cut id (of the ``train_fraction``
    subset): a validation score on training cuts, and the best checkpoint picked by it, would be wrong
    silently. The message gives the counts and the first shared ids."""
    train_ids = set(training_subset(cfg).ids)
    if cfg.transfer_cuts:
        train_ids |= set(read_cuts(cfg.transfer_cuts, lazy=True).ids)
    valid_ids = set(read_cuts(cfg.valid_cuts, lazy=True).ids)
    shared = sorted(train_ids & valid_ids)
    if shared:
        raise ValueError(f"{len(shared)} of the {len(valid_ids)} validation cuts ({cfg.valid_cuts}) are also among "
                         f"the {len(train_ids)} training cuts ({cfg.train_cuts}), e.g. {shared[:3]}: validate on "
                         "held-out cuts (the dev split)")  # fmt: skip


def adapted_num_buckets(num_buckets: int, cuts: CutSet) -> int:
    """The number of duration buckets for ``cuts``: ``num_buckets``, or ``len(cuts) // 2`` when that is
    smaller (at least two cuts per bucket on average; lhotse refuses more buckets than cuts). Below 2 the
    trainer samples without bucketing. Reads at most ``2 * num_buckets`` cuts of a lazy manifest."""
    if num_buckets < 1:
        raise ValueError(f"DataConfig.num_buckets must be >= 1, got {num_buckets}")
    seen = sum(1 for _ in itertools.islice(iter(cuts), 2 * num_buckets))
    adapted = min(num_buckets, seen // 2)
    if adapted < num_buckets:
        how = f"{adapted} buckets" if adapted >= 2 else "no bucketing"
        logging.info(f"{seen} training cuts: {how} instead of num_buckets={num_buckets}")
    return adapted


class FrameDataModule:
    """Training and evaluation DataLoaders over frame-labelled cuts; DDP sharding by ``rank``."""

    def __init__(self, cfg: DataConfig, seed: int = 42, world_size: int = 1, rank: int = 0,
                 extra_fields: Mapping[str, ExtraField] | None = None) -> None:  # fmt: skip
        """``seed``: of the training sampler's shuffling and of SpecAugment's masks (with the epoch).
        ``extra_fields``: added to training batches only (module docstring)."""
        self.cfg, self.seed = cfg, seed
        self.world_size, self.rank = world_size, rank
        self.extra_fields = dict(extra_fields or {})
        self._train: tuple[ResumableSampler, FrameDataset] | None = None
        self._train_cuts: CutSet | None = None
        self._num_train_cuts: int | None = None
        self._valid_cuts: CutSet | None = None

    def _train_parts(self) -> tuple[ResumableSampler, FrameDataset]:
        if self._train is None:
            cfg = self.cfg
            cuts = self._train_cuts = training_cuts(cfg)
            num_buckets = adapted_num_buckets(cfg.num_buckets, cuts)
            if num_buckets < 2:  # lhotse's bucketing needs 2 buckets or more
                sampler = SimpleCutSampler(cuts, max_duration=cfg.max_duration, shuffle=cfg.shuffle,
                                           drop_last=cfg.drop_last, seed=self.seed, world_size=self.world_size,
                                           rank=self.rank)  # fmt: skip
            else:
                with warnings.catch_warnings():  # a train_fraction subset is eager, and small: that is fine
                    warnings.filterwarnings("ignore", "You are using DynamicBucketingSampler with an eagerly read")
                    sampler = DynamicBucketingSampler(
                        cuts, max_duration=cfg.max_duration, num_buckets=num_buckets, shuffle=cfg.shuffle,
                        drop_last=cfg.drop_last, seed=self.seed, world_size=self.world_size, rank=self.rank,
                    )  # fmt: skip
            augment = SpecAugment.from_config(cfg) if cfg.spec_augment else None
            labels = "optional" if cfg.transfer_cuts else True
            dataset = FrameDataset(augment, self.extra_fields, with_labels=labels, seed=self.seed)
            self._train = (ResumableSampler(sampler), dataset)
        return self._train

    @property
    def train_sampler(self) -> ResumableSampler:
        return self._train_parts()[0]

    def train_dataloader(self, epoch: int, skip_batches: int = 0) -> DataLoader:
        """Batches of ``epoch`` (1-based), after skipping its first ``skip_batches`` (resumption)."""
        sampler, dataset = self._train_parts()
        sampler.set_epoch(epoch, skip_batches)
        dataset.set_epoch(epoch)
        return self._loader(dataset, sampler, seed=self.seed + epoch)

    def num_train_batches(self, epoch: int = 1) -> int:
        """Batches this rank gets in ``epoch`` (iterates the cut metadata once; no features read)."""
        sampler = self.train_sampler
        sampler.set_epoch(epoch)
        return sum(1 for _ in sampler)

    def eval_dataloader(self, cuts: CutSet | str | Path, with_labels: bool = True, max_duration: float | None = None,
                        extra_fields: Mapping[str, ExtraField] | None = None) -> DataLoader:  # fmt: skip
        """Unshuffled, unaugmented batches of ``cuts`` (validation, test, teacher posteriors).

        Sharded by rank: under DDP each rank sees its share (lhotse may repeat a few cuts, with ids
        ``..._dup<k>``, so that every rank gets the same number of batches: see ``ignore_duplicates``).
        """
        sampler = SimpleCutSampler(
            read_cuts(cuts), max_duration=max_duration or self.cfg.max_duration, shuffle=False,
            world_size=self.world_size, rank=self.rank,
        )  # fmt: skip
        dataset = FrameDataset(None, extra_fields, with_labels=with_labels)
        return self._loader(dataset, sampler, seed=self.seed)

    def num_train_cuts(self) -> int:
        """Cuts of an epoch over all ranks: the (fraction of the) training cuts and the transfer cuts."""
        if self._num_train_cuts is None:
            self._train_parts()
            self._num_train_cuts = sum(1 for _ in self._train_cuts.ids)
        return self._num_train_cuts

    def valid_cuts(self) -> CutSet:
        """The validation cuts (read once)."""
        if self._valid_cuts is None:
            self._valid_cuts = read_cuts(self.cfg.valid_cuts)
        return self._valid_cuts

    def valid_dataloader(self) -> DataLoader:
        """``eval_dataloader`` of ``cfg.valid_cuts`` (read once)."""
        return self.eval_dataloader(self.valid_cuts())

    def _loader(self, dataset: FrameDataset, sampler, seed: int) -> DataLoader:
        # own generator: creating the iterator must not consume the global torch RNG (exact resumption)
        generator = torch.Generator().manual_seed(seed)
        workers = self.cfg.num_workers
        logging.debug(f"DataLoader with {workers} workers (rank {self.rank}/{self.world_size})")
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=workers, persistent_workers=False,
                          generator=generator, pin_memory=torch.cuda.is_available())  # fmt: skip
