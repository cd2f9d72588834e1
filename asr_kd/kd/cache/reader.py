"""Reading a soft-target cache: the merged cuts, checked against ``metadata.json``, the lookup by cut id
(``SoftTargetIndex``), the coverage check of a run's cuts, and batch collation.

See the package docstring (:mod:`asr_kd.kd.cache`) for the layout and the fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
from lhotse import CutSet

from asr_kd.kd.cache.layout import (
    DUPLICATE_SUFFIX,
    FIELD_DENSE,
    FIELD_IDS,
    FIELD_NUM_PDFS,
    FIELD_PROBS,
    has_soft_targets,
    merged_manifest_path,
    num_stored_frames,
)
from asr_kd.kd.cache.metadata import CacheMismatchError, check_metadata, cut_ids_sha256, read_metadata
from asr_kd.kd.cache.topk import densify_topk


def load_soft_target_cuts(cache_dir: Path | str, split: str = "train", expected: dict | None = None,
                          cuts: CutSet | Sequence | None = None) -> CutSet:  # fmt: skip
    """The cuts of a merged split, checked against ``metadata.json``.

    ``expected``: fields the cache must match (see ``check_metadata``), e.g. ``{"temperature": 2.0}``.
    ``cuts``: when given, every one of them must be in the cache with as many frames as its soft targets;
    the result is then ``cuts`` (same order) with the soft-target fields attached.
    Raises CacheMismatchError naming the mismatching field or cut.
    """
    meta = read_metadata(cache_dir)
    if expected:
        check_metadata(meta, expected, where=Path(cache_dir) / "metadata.json")
    info = meta.get("splits", {}).get(split)
    path = merged_manifest_path(cache_dir, split)
    if info is None or not path.is_file():
        merged = sorted(meta.get("splits", {}))
        raise FileNotFoundError(
            f"{cache_dir} has no merged split {split!r} (merged: {merged}): run merge_soft_target_shards"
        )
    cached = CutSet.from_file(path)
    ids = [c.id for c in cached]
    if len(ids) != info["num_cuts"] or cut_ids_sha256(ids) != info["cut_ids_sha256"]:
        raise CacheMismatchError(f"{path} does not match metadata.json (cut count / ids hash): re-run the merge")
    for c in cached:
        if not has_soft_targets(c):
            raise CacheMismatchError(f"cut {c.id} has no soft targets in {path}")
    if cuts is None:
        return cached
    by_id = {c.id: c for c in cached}
    fields = (FIELD_DENSE,) if meta["storage"] == "dense" else (FIELD_IDS, FIELD_PROBS)
    out = []
    for cut in cuts:
        src = by_id.get(cut.id)
        if src is None:
            raise CacheMismatchError(f"cut {cut.id} has no soft targets in {path}")
        stored = num_stored_frames(src)
        if cut.num_frames is not None and cut.num_frames != stored:
            raise CacheMismatchError(f"cut {cut.id} has {cut.num_frames} frames but its soft targets have {stored}")
        for name in (*fields, FIELD_NUM_PDFS):
            cut = cut.with_custom(name, src.custom[name])
        out.append(cut)
    return CutSet.from_cuts(out)


class SoftTargetIndex:
    """The soft targets of a merged cache split, looked up by cut id (``index.cuts_of(batch_cuts)``).

    Any sampler, batch size or world size works: a batch finds its targets through its own cut ids, never
    through positions. The manifest is read on first use, in the process that uses it (a DataLoader
    worker, a DDP rank); pickling drops the table, so that handing the index to workers is cheap.
    lhotse's DDP padding duplicates (``<id>_dup<k>``) find the targets of ``<id>``.
    """

    def __init__(self, manifest: Path | str, *more: Path | str) -> None:
        """``manifest``: a merged split's manifest; ``more``: further splits' (e.g. the transfer split),
        looked up as one table (a cut id in two of them is refused)."""
        self.manifest = str(manifest)
        self.more = [str(m) for m in more]
        self._by_id: dict | None = None

    @classmethod
    def of_split(cls, cache_dir: Path | str, split: str = "train") -> "SoftTargetIndex":
        return cls(merged_manifest_path(cache_dir, split))

    def __getstate__(self) -> dict:
        return {"manifest": self.manifest, "more": self.more, "_by_id": None}

    def _table(self) -> dict:
        if self._by_id is None:
            table: dict = {}
            for manifest in [self.manifest, *self.more]:
                for c in CutSet.from_file(manifest):
                    if c.id in table:
                        raise CacheMismatchError(f"cut {c.id} has soft targets in two of {[self.manifest, *self.more]}")
                    table[c.id] = c
            self._by_id = table
        return self._by_id

    @property
    def ids(self) -> set[str]:
        return set(self._table())

    def cuts_of(self, cuts: CutSet | Sequence) -> list:
        """The cache's cuts (carrying the soft-target fields) of ``cuts``, in their order.

        Raises CacheMismatchError naming the first cut the cache does not hold.
        """
        table, out = self._table(), []
        for cut in cuts:
            src = table.get(cut.id)
            if src is None:
                src = table.get(DUPLICATE_SUFFIX.sub("", cut.id))
            if src is None:
                where = self.manifest if not self.more else [self.manifest, *self.more]
                raise CacheMismatchError(f"cut {cut.id} has no soft targets in {where}")
            out.append(src)
        return out


def check_cache_covers(cache_dir: Path | str, split: str, cut_ids: Sequence[str], what: str = "training", *,
                       held: Iterable[str] | None = None, meta: dict | None = None) -> None:  # fmt: skip
    """Raise CacheMismatchError unless the merged ``split`` of the cache holds every id of ``cut_ids``
    (or left it out for its non-finite features: ``skipped_cut_ids``).

    ``held``, ``meta``: the split's cut ids and ``metadata.json`` when the caller has read them already
    (``load_soft_target_cuts``), so that the manifest is not read again; by default both are read here.
    The message gives the counts and the first missing ids, and says which cuts the cache was built from
    (``metadata.json``: ``splits.<split>.cuts_path``).
    """
    meta = read_metadata(cache_dir) if meta is None else meta
    info = meta.get("splits", {}).get(split) or {}
    held = SoftTargetIndex.of_split(cache_dir, split).ids if held is None else set(held)
    left_out = set(info.get("skipped_cut_ids") or [])  # non-finite features: the trainer skips them too
    missing = sorted(set(cut_ids) - held - left_out)
    if missing:
        source = info.get("cuts_path", "unknown cuts")
        raise CacheMismatchError(
            f"the soft-target cache {cache_dir} (split {split!r}: {len(held)} cuts of {source}) does not cover the "
            f"{what} cuts: {len(missing)} of {len(set(cut_ids))} have no soft targets (e.g. {missing[:3]}); "
            f"build the cache from the same cuts (asr-kd cache --cuts)"
        )


def soft_targets_of(cut) -> np.ndarray:
    """``(T, P)`` float32 soft targets of ``cut``; rows sum to 1 (top-k completed by the module's rule)."""
    if cut.has_custom(FIELD_IDS) and cut.has_custom(FIELD_PROBS):
        ids = torch.from_numpy(cut.load_custom(FIELD_IDS).astype(np.int64))
        probs = torch.from_numpy(cut.load_custom(FIELD_PROBS).astype(np.float32))
        return densify_topk(ids, probs, int(cut.custom[FIELD_NUM_PDFS])).numpy()
    if cut.has_custom(FIELD_DENSE):
        probs = cut.load_custom(FIELD_DENSE).astype(np.float32)
        return probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-30)
    raise CacheMismatchError(f"cut {cut.id} has no soft targets (no custom field {FIELD_DENSE!r} or {FIELD_IDS!r})")


class SoftTargetBatch(NamedTuple):
    probs: torch.Tensor  # (B, T, P) float32 (dense), or (B, T, k) top-k probabilities (sparse); 0 on padding
    ids: torch.Tensor | None  # (B, T, k) int64 pdf ids (sparse), 0 on padding; None (dense)
    num_frames: torch.Tensor  # (B,) int64 frames per cut


def collate_soft_targets(cuts: CutSet | Sequence, sparse: bool = False, pad_to: int | None = None) -> SoftTargetBatch:
    """Soft targets of a batch of cuts, right-padded with zeros to the longest (or to ``pad_to`` frames).

    ``sparse=True`` (top-k caches only) keeps them as ``(ids, probs)`` for ``sparse_distillation_loss``:
    ``B T k`` instead of ``B T P`` values, for large P.
    """
    cuts = list(cuts)
    if sparse:
        no_topk = [c.id for c in cuts if not (c.has_custom(FIELD_IDS) and c.has_custom(FIELD_PROBS))]
        if no_topk:
            raise CacheMismatchError(f"sparse collation needs top-k soft targets; cut {no_topk[0]} has none")
        arrays = [(c.load_custom(FIELD_IDS).astype(np.int64), c.load_custom(FIELD_PROBS).astype(np.float32))
                  for c in cuts]  # fmt: skip
    else:
        arrays = [(None, soft_targets_of(c)) for c in cuts]
    lengths = [p.shape[0] for _, p in arrays]
    max_len = max(lengths, default=0) if pad_to is None else pad_to
    if max_len < max(lengths, default=0):
        raise ValueError(f"pad_to={pad_to} is shorter than the longest cut ({max(lengths)} frames)")
    width = arrays[0][1].shape[1] if arrays else 0
    probs = torch.zeros(len(cuts), max_len, width)
    ids = torch.zeros(len(cuts), max_len, width, dtype=torch.int64) if sparse else None
    for i, (cut_ids, cut_probs) in enumerate(arrays):
        probs[i, : lengths[i]] = torch.from_numpy(cut_probs)
        if sparse:
            ids[i, : lengths[i]] = torch.from_numpy(cut_ids)
    return SoftTargetBatch(probs=probs, ids=ids, num_frames=torch.tensor(lengths, dtype=torch.int64))
