"""Writing a soft-target cache: one HDF5 shard at a time, resumable and sharded by rank, then the merge.

See the package docstring (:mod:`asr_kd.kd.cache`) for the layout and the fields.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from lhotse import CutSet, NumpyHdf5Writer
from tqdm import tqdm

from asr_kd.kd.cache.layout import (
    FIELD_DENSE,
    FIELD_IDS,
    FIELD_NUM_PDFS,
    FIELD_PROBS,
    is_shard_complete,
    merged_manifest_path,
    num_stored_frames,
    shard_name,
    shard_paths,
    shard_slice,
    shards_of_rank,
    skipped_path,
)
from asr_kd.guard import DEFAULT_MAX_SKIPPED_SHARE, check_skipped_share, raise_if_output_error, stage_lock
from asr_kd.kd.cache.metadata import CacheMismatchError, cut_ids_sha256, id_dtype_for, read_metadata, record_split
from asr_kd.kd.cache.topk import topk_posteriors
from asr_kd.utils import atomic_output, tmp_path_for, write_json

DEFAULT_FRAME_SHIFT = 0.01  # seconds; used only for cuts without features (which carry their own)
SUM_TOLERANCE = 1e-3  # |row sum - 1| accepted from posteriors_fn (catches logits passed by mistake)

PosteriorsFn = Callable[[list], Sequence["np.ndarray | torch.Tensor"]]


class InMemoryHdf5Writer(NumpyHdf5Writer):
    """lhotse's ``NumpyHdf5Writer`` (same storage type, same manifests) whose HDF5 file is built in memory
    (h5py's core driver without a backing store); :meth:`save` writes its bytes to disk in one go.

    Why: HDF5 writing straight to a file crashes the process (a segfault after "Can't decrement id ref
    count ... errno = 28") when the disk fills; a plain file write instead raises ``OSError``, which the
    cache stage turns into a clean ``OutputIOError``. The price: one shard is held in memory.
    """

    def __init__(self, storage_path: Path | str) -> None:  # noqa: D107 - no NumpyHdf5Writer.__init__: no file
        import h5py

        self.storage_path_ = Path(storage_path)
        self.hdf = h5py.File(f"{storage_path}.in-memory", mode="w", driver="core", backing_store=False)

    def save(self, path: Path | str) -> int:
        """Write the HDF5 image to ``path`` (flushed and fsynced) and close; returns its size in bytes."""
        self.hdf.flush()
        image = self.hdf.id.get_file_image()
        self.hdf.close()
        with open(path, "wb") as f:
            f.write(image)
            f.flush()
            os.fsync(f.fileno())
        return len(image)


class SoftTargetWriter:
    """Writes one shard: ``with SoftTargetWriter(...) as w: cut = w.write(cut, posteriors)``.

    ``posteriors`` are ``(T, P)`` probabilities at the cache temperature, T = ``cut.num_frames``.
    The shard is built in memory (:class:`InMemoryHdf5Writer`) and, when the block exits without an
    exception, written to a temporary file, renamed, and completed by its manifest. Entering takes the
    shard's lock (``stage_lock``: a second writer of the same shard is refused) and removes what a killed
    run left of this shard. A failing write of the shard (disk full, file-size limit, I/O error) raises
    ``OutputIOError`` and leaves nothing of it.
    """

    def __init__(self, cache_dir: Path | str, shard_name: str, mode: str = "topk", k: int | None = 16,
                 num_pdfs: int | None = None) -> None:  # fmt: skip
        if mode not in ("dense", "topk"):
            raise ValueError(f"mode must be 'dense' or 'topk', got {mode!r}")
        if mode == "topk" and (k is None or k < 1):
            raise ValueError(f"top-k storage needs k >= 1, got {k}")
        self.mode, self.k, self.num_pdfs, self.name = mode, k, num_pdfs, shard_name
        self.cache_dir = Path(cache_dir)
        self.h5_path, self.manifest_path = shard_paths(cache_dir, shard_name)
        self.tmp_path = tmp_path_for(self.h5_path)
        self.cuts: list = []
        self.skipped: dict[str, str] = {}  # cut id -> why it was left out
        self._writer: InMemoryHdf5Writer | None = None
        self._lock: contextlib.ExitStack | None = None

    def __enter__(self) -> "SoftTargetWriter":
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(stage_lock(self.cache_dir, f"cache-shard-{self.name}"))
        try:
            if self.manifest_path.is_file():
                raise FileExistsError(f"shard {self.name} is already complete ({self.manifest_path})")
            self.h5_path.parent.mkdir(parents=True, exist_ok=True)
            remove_partial_shard(self.cache_dir, self.name)
            self._writer = InMemoryHdf5Writer(self.h5_path)
        except BaseException:
            self._lock.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            return self._finish(exc_type)
        finally:
            self._lock.close()

    def _finish(self, exc_type) -> bool:
        writer, self._writer = self._writer, None
        if exc_type is not None:
            writer.hdf.close()
            logging.warning(f"shard {self.name}: interrupted after {len(self.cuts)} cuts, nothing of it written")
            return False
        try:
            size = writer.save(self.tmp_path)
            os.replace(self.tmp_path, self.h5_path)
            if self.skipped:  # before the manifest, which marks the shard complete
                write_json(skipped_path(self.cache_dir, self.name), self.skipped)
            with atomic_output(self.manifest_path) as tmp:
                CutSet.from_cuts(self.cuts).to_file(tmp)
        except Exception as e:
            self.tmp_path.unlink(missing_ok=True)
            remove_partial_shard(self.cache_dir, self.name)
            raise_if_output_error(e, self.h5_path)
            raise
        frames = sum(num_stored_frames(c) for c in self.cuts)
        logging.info(f"shard {self.name}: {len(self.cuts)} cuts, {frames} frames, {size / 2**20:.1f} MiB "
                     f"({size / max(frames, 1):.1f} bytes/frame with HDF5 overhead)")  # fmt: skip
        return False

    def write(self, cut, posteriors: np.ndarray | torch.Tensor):
        """Store the soft targets of ``cut``; returns the cut with the custom fields attached."""
        if self._writer is None:
            raise RuntimeError("SoftTargetWriter.write must be called inside its `with` block")
        p = _checked_posteriors(cut, torch.as_tensor(posteriors).detach(), self.num_pdfs)
        self.num_pdfs = p.shape[1]
        if self.mode == "dense":
            fields = {FIELD_DENSE: self._store(f"probs/{cut.id}", p.cpu().numpy().astype(np.float16), cut)}
        else:
            ids, probs = topk_posteriors(p, self.k)
            id_dtype = np.int16 if id_dtype_for(self.num_pdfs) == "int16" else np.int32
            fields = {
                FIELD_IDS: self._store(f"ids/{cut.id}", ids.cpu().numpy().astype(id_dtype), cut),
                FIELD_PROBS: self._store(f"probs/{cut.id}", probs.cpu().numpy().astype(np.float16), cut),
            }
        fields[FIELD_NUM_PDFS] = self.num_pdfs
        for name, value in fields.items():
            cut = cut.with_custom(name, value)
        self.cuts.append(cut)
        return cut

    def skip(self, cut, reason: str) -> None:
        """Leave ``cut`` out of the shard (e.g. non-finite features); it is listed in the shard's skip file."""
        self.skipped[cut.id] = reason
        logging.warning(f"cut {cut.id} skipped: {reason}")

    def _store(self, key: str, array: np.ndarray, cut):
        frame_shift = cut.frame_shift or DEFAULT_FRAME_SHIFT
        stored = self._writer.store_array(key, array, frame_shift=frame_shift, temporal_dim=0, start=cut.start)
        stored.array.storage_path = str(self.h5_path)  # the name it has once complete
        return stored


def _checked_posteriors(cut, p: torch.Tensor, num_pdfs: int | None) -> torch.Tensor:
    if p.dim() != 2:
        raise ValueError(f"cut {cut.id}: posteriors must be (T, P), got shape {tuple(p.shape)}")
    p = p if p.dtype == torch.float64 else p.float()
    if num_pdfs is not None and p.shape[1] != num_pdfs:
        raise ValueError(f"cut {cut.id}: posteriors have {p.shape[1]} pdfs, the cache holds num_pdfs={num_pdfs}")
    if cut.num_frames is not None and p.shape[0] != cut.num_frames:
        raise ValueError(f"cut {cut.id}: {p.shape[0]} posterior frames != its {cut.num_frames} feature frames")
    if p.shape[0]:
        deviation = float((p.sum(dim=1) - 1).abs().max())
        if not torch.isfinite(p).all() or float(p.min()) < 0 or deviation > SUM_TOLERANCE:
            raise ValueError(
                f"cut {cut.id}: posteriors must be probabilities (>= 0, rows summing to 1); got min "
                f"{float(p.min()):.3g}, max |row sum - 1| {deviation:.3g}: pass ensemble_posteriors, not logits"
            )
    return p


def remove_partial_shard(cache_dir: Path | str, name: str) -> None:
    """Delete what an interrupted writer left of shard ``name`` (no-op for a complete shard)."""
    h5, manifest = shard_paths(cache_dir, name)
    if manifest.is_file():
        return
    for stale in [*glob.glob(str(h5.parent / f".tmp.*.{glob.escape(h5.name)}")), h5, skipped_path(cache_dir, name)]:
        if Path(stale).exists():
            logging.info(f"removing partial shard file {stale}")
            Path(stale).unlink()


def write_soft_target_shards(
    cuts: CutSet | Sequence,
    posteriors_fn: PosteriorsFn,
    cache_dir: Path | str,
    split: str,
    num_shards: int = 1,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 16,
) -> list[str]:
    """Write this rank's shards of ``split`` (mode, k, num_pdfs from ``metadata.json``); skip complete ones.

    ``posteriors_fn`` gets lists of up to ``batch_size`` cuts (in sorted id order) and returns one
    ``(T_i, P)`` probability array per cut, or a string for a cut it leaves out (the reason: non-finite
    features, say). Returns the names of the shards written by this call.
    """
    meta = read_metadata(cache_dir)
    ordered = sorted(cuts, key=lambda c: c.id)
    for a, b in zip(ordered, ordered[1:]):
        if a.id == b.id:
            raise ValueError(f"cut id {a.id} occurs twice in the {split} cuts")
    written = []
    for shard in shards_of_rank(rank, world_size, num_shards):
        name = shard_name(split, shard, num_shards)
        shard_cuts = ordered[shard_slice(len(ordered), shard, num_shards)]
        if is_shard_complete(cache_dir, name):
            _check_complete_shard(cache_dir, name, [c.id for c in shard_cuts])
            logging.info(f"shard {name} is complete: skipped")
            continue
        with SoftTargetWriter(cache_dir, name, meta["storage"], meta["k"], meta["num_pdfs"]) as writer:
            with tqdm(total=len(shard_cuts), desc=f"soft targets {name}", unit="cut", leave=False) as bar:
                for b in range(0, len(shard_cuts), batch_size):
                    batch = shard_cuts[b : b + batch_size]
                    posteriors = posteriors_fn(batch)
                    if len(posteriors) != len(batch):
                        raise ValueError(f"posteriors_fn returned {len(posteriors)} arrays for {len(batch)} cuts")
                    for cut, p in zip(batch, posteriors):
                        if isinstance(p, str):
                            writer.skip(cut, p)
                        else:
                            writer.write(cut, p)
                    bar.update(len(batch))
        written.append(name)
    return written


def _shard_cuts(cache_dir, name: str) -> list:
    """The cuts of a complete shard (lhotse reads an empty manifest as None)."""
    return list(CutSet.from_file(shard_paths(cache_dir, name)[1]) or [])


def _shard_skipped(cache_dir, name: str) -> dict[str, str]:
    path = skipped_path(cache_dir, name)
    return json.loads(path.read_text()) if path.is_file() else {}


def _check_complete_shard(cache_dir, name: str, expected_ids: list[str]) -> None:
    ids = sorted([c.id for c in _shard_cuts(cache_dir, name)] + list(_shard_skipped(cache_dir, name)))
    if ids != expected_ids:
        raise CacheMismatchError(
            f"complete shard {name} holds {len(ids)} cuts that are not the {len(expected_ids)} cuts this run "
            f"assigns to it: the split's cut list changed; use another cache dir or delete {cache_dir}"
        )


def merge_soft_target_shards(cache_dir: Path | str, split: str, num_shards: int,
                             cuts: CutSet | Sequence | None = None,
                             cuts_path: Path | str | None = None,
                             max_skipped_share: float = DEFAULT_MAX_SKIPPED_SHARE) -> Path:  # fmt: skip
    """Concatenate the ``num_shards`` complete shards of ``split`` into ``cuts_soft_<split>.jsonl.gz``
    and record its ids hash and counts in ``metadata.json``; ``cuts`` (optional) must be exactly its cuts
    (with those left out), ``cuts_path`` (optional) is the manifest they were read from, recorded as
    ``cuts_path``. The cuts the writers left out are recorded as ``num_skipped`` / ``skipped_cut_ids``;
    more than ``max_skipped_share`` of them raises ``TooManySkippedError`` and merges nothing."""
    merged, skipped = [], {}
    for shard in range(num_shards):
        name = shard_name(split, shard, num_shards)
        if not is_shard_complete(cache_dir, name):
            raise RuntimeError(f"shard {name} is not complete (no {shard_paths(cache_dir, name)[1]}): "
                               f"run the ranks that write it first")  # fmt: skip
        merged.extend(_shard_cuts(cache_dir, name))
        skipped.update(_shard_skipped(cache_dir, name))
    ids = [c.id for c in merged]
    if any(a >= b for a, b in zip(ids, ids[1:])):
        raise CacheMismatchError(f"the shards of {split} in {cache_dir} are not one sorted list of distinct cuts")
    check_skipped_share(len(skipped), len(ids) + len(skipped), max_skipped_share,
                        f"soft targets of split {split} in {cache_dir} (cuts with non-finite features)")  # fmt: skip
    if cuts is not None:
        wanted = sorted(c.id for c in cuts)
        if wanted != sorted(ids + list(skipped)):
            missing = sorted(set(wanted) - set(ids) - set(skipped))
            extra = sorted(set(ids) - set(wanted))
            raise CacheMismatchError(f"shards of {split} do not hold the given cuts: missing {missing[:3]}, "
                                     f"extra {extra[:3]} ({len(missing)} / {len(extra)} in all)")  # fmt: skip
    path = merged_manifest_path(cache_dir, split)
    with atomic_output(path) as tmp:
        CutSet.from_cuts(merged).to_file(tmp)
    info = {"num_cuts": len(ids), "cut_ids_sha256": cut_ids_sha256(ids), "num_shards": num_shards,
            "num_frames": sum(num_stored_frames(c) for c in merged), "manifest": path.name,
            "cuts_path": str(cuts_path) if cuts_path is not None else None, "num_skipped": len(skipped),
            "skipped_cut_ids": sorted(skipped)}  # fmt: skip
    record_split(cache_dir, split, info)
    logging.info(f"merged {num_shards} shards of {split}: {len(ids)} cuts, {info['num_frames']} frames -> {path}"
                 f"{f'; {len(skipped)} cut(s) skipped: {sorted(skipped)[:5]}' if skipped else ''}")
    return path
