"""The on-disk soft-target cache: ensemble posteriors at temperature T as lhotse custom fields on cuts.

Usage (the cache stage; every rank runs the first two calls, rank 0 the merge once all ranks are done)::

    from asr_kd.kd.cache import (cache_metadata, collate_soft_targets, load_soft_target_cuts,
                                 merge_soft_target_shards, prepare_cache_dir, write_soft_target_shards)
    prepare_cache_dir(cache_dir, cache_metadata(teacher_paths, temperature=2.0, num_pdfs=87, k=16))
    write_soft_target_shards(cuts, posteriors_fn, cache_dir, "train", num_shards=8, rank=r, world_size=w)
    merge_soft_target_shards(cache_dir, "train", num_shards=8)              # -> cuts_soft_train.jsonl.gz

    # the distill stage
    cuts = load_soft_target_cuts(cache_dir, "train", expected={"temperature": 2.0, "num_pdfs": 87})
    batch = collate_soft_targets(cuts_of_a_batch)        # (B, T, P) probabilities + frame counts

``posteriors_fn(list_of_cuts) -> [(T_i, P) probabilities]`` runs the teachers and ``ensemble_posteriors``.

Layout of ``cache_dir``::

    metadata.json                                    teachers + sha256, T, mode, weights, k, ... (cache_metadata)
    cuts_soft_<split>.jsonl.gz                       merged cut manifest, sorted by cut id (written last)
    shards/soft_targets_<split>.<i>-of-<n>.h5        one HDF5 file per shard (NumpyHdf5Writer)
    shards/cuts_soft_<split>.<i>-of-<n>.jsonl.gz     its cuts; written only once the .h5 is complete

Shard i of n holds a contiguous slice of the split's sorted cut ids (``shard_slice``); rank r writes shards
r, r + w, r + 2w, ... (``shards_of_rank``). A shard is written to ``shards/.tmp.<pid>.<name>.h5``, renamed
when all its cuts are in, and only then gets its manifest: the manifest marks a complete shard. A resumed
run skips complete shards and deletes partial ones (temporary files, or an .h5 without its manifest).

Custom fields on each cut (lookup by cut id through the manifest, never by batch position):

- dense storage: ``soft_targets``, a ``TemporalArray`` of ``(T, P)`` float16 probabilities;
- top-k storage: ``soft_target_ids`` ``(T, k)`` int16 (int32 when P > 32768) pdf ids, most probable first,
  and ``soft_target_probs`` ``(T, k)`` float16, the teacher ensemble's probabilities as they are (not
  renormalised); the remaining mass ``1 - sum(top-k)`` is spread uniformly over the other P - k pdfs when
  a full distribution is needed (``asr_kd.kd.topk``; the sparse loss uses the same rule);
- both: ``soft_target_num_pdfs`` (int).

``soft_targets_of(cut)`` gives the ``(T, P)`` float32 distribution either way; rows sum to 1 (a dense row
is divided by its sum, which removes the fp16 rounding of the total).
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from lhotse import CutSet, NumpyHdf5Writer
from tqdm import tqdm

from asr_kd.kd.cache_metadata import (  # noqa: F401 (re-exported: one import for the cache stage)
    CacheMismatchError, bytes_per_frame, cache_metadata, check_metadata, cut_ids_sha256, id_dtype_for,
    prepare_cache_dir, read_metadata, record_split,
)  # fmt: skip
from asr_kd.kd.topk import densify_topk, topk_posteriors
from asr_kd.utils import atomic_output, tmp_path_for

SHARDS_DIR = "shards"
FIELD_DENSE = "soft_targets"
FIELD_IDS = "soft_target_ids"
FIELD_PROBS = "soft_target_probs"
FIELD_NUM_PDFS = "soft_target_num_pdfs"
DEFAULT_FRAME_SHIFT = 0.01  # seconds; used only for cuts without features (which carry their own)
SUM_TOLERANCE = 1e-3  # |row sum - 1| accepted from posteriors_fn (catches logits passed by mistake)

PosteriorsFn = Callable[[list], Sequence["np.ndarray | torch.Tensor"]]


def shard_name(split: str, shard: int, num_shards: int) -> str:
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, num_shards={num_shards}), got {shard}")
    return f"{split}.{shard:05d}-of-{num_shards:05d}"


def shard_slice(num_cuts: int, shard: int, num_shards: int) -> slice:
    """Contiguous, balanced slice of the sorted cut ids held by ``shard`` (sizes differ by at most 1)."""
    size, extra = divmod(num_cuts, num_shards)
    start = shard * size + min(shard, extra)
    return slice(start, start + size + (shard < extra))


def shards_of_rank(rank: int, world_size: int, num_shards: int) -> list[int]:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return list(range(rank, num_shards, world_size))


def shard_paths(cache_dir: Path | str, name: str) -> tuple[Path, Path]:
    """``(h5, manifest)`` of shard ``name``."""
    shards = Path(cache_dir) / SHARDS_DIR
    return shards / f"soft_targets_{name}.h5", shards / f"cuts_soft_{name}.jsonl.gz"


def merged_manifest_path(cache_dir: Path | str, split: str) -> Path:
    return Path(cache_dir) / f"cuts_soft_{split}.jsonl.gz"


def is_shard_complete(cache_dir: Path | str, name: str) -> bool:
    return shard_paths(cache_dir, name)[1].is_file()


class SoftTargetWriter:
    """Writes one shard: ``with SoftTargetWriter(...) as w: cut = w.write(cut, posteriors)``.

    ``posteriors`` are ``(T, P)`` probabilities at the cache temperature, T = ``cut.num_frames``.
    The shard becomes complete (renamed, manifest written) only when the block exits without an exception;
    otherwise its temporary file is deleted. Entering removes what a killed run left of this shard.
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
        self._writer: NumpyHdf5Writer | None = None

    def __enter__(self) -> "SoftTargetWriter":
        if self.manifest_path.is_file():
            raise FileExistsError(f"shard {self.name} is already complete ({self.manifest_path})")
        self.h5_path.parent.mkdir(parents=True, exist_ok=True)
        remove_partial_shard(self.cache_dir, self.name)
        self._writer = NumpyHdf5Writer(self.tmp_path, mode="w")
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._writer.close()
        self._writer = None
        if exc_type is not None:
            self.tmp_path.unlink(missing_ok=True)
            logging.warning(f"shard {self.name}: interrupted after {len(self.cuts)} cuts, partial file removed")
            return False
        os.replace(self.tmp_path, self.h5_path)
        with atomic_output(self.manifest_path) as tmp:
            CutSet.from_cuts(self.cuts).to_file(tmp)
        frames = sum(_num_stored_frames(c) for c in self.cuts)
        size = self.h5_path.stat().st_size
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
    for stale in [*glob.glob(str(h5.parent / f".tmp.*.{glob.escape(h5.name)}")), h5]:
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
    ``(T_i, P)`` probability array per cut. Returns the names of the shards written by this call.
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
                        writer.write(cut, p)
                    bar.update(len(batch))
        written.append(name)
    return written


def _check_complete_shard(cache_dir, name: str, expected_ids: list[str]) -> None:
    ids = [c.id for c in CutSet.from_file(shard_paths(cache_dir, name)[1])]
    if ids != expected_ids:
        raise CacheMismatchError(
            f"complete shard {name} holds {len(ids)} cuts that are not the {len(expected_ids)} cuts this run "
            f"assigns to it: the split's cut list changed; use another cache dir or delete {cache_dir}"
        )


def merge_soft_target_shards(cache_dir: Path | str, split: str, num_shards: int,
                             cuts: CutSet | Sequence | None = None) -> Path:  # fmt: skip
    """Concatenate the ``num_shards`` complete shards of ``split`` into ``cuts_soft_<split>.jsonl.gz``
    and record its ids hash and counts in ``metadata.json``; ``cuts`` (optional) must be exactly its cuts."""
    merged = []
    for shard in range(num_shards):
        name = shard_name(split, shard, num_shards)
        if not is_shard_complete(cache_dir, name):
            raise RuntimeError(f"shard {name} is not complete (no {shard_paths(cache_dir, name)[1]}): "
                               f"run the ranks that write it first")  # fmt: skip
        merged.extend(CutSet.from_file(shard_paths(cache_dir, name)[1]))
    ids = [c.id for c in merged]
    if any(a >= b for a, b in zip(ids, ids[1:])):
        raise CacheMismatchError(f"the shards of {split} in {cache_dir} are not one sorted list of distinct cuts")
    if cuts is not None:
        wanted = sorted(c.id for c in cuts)
        if wanted != ids:
            missing = sorted(set(wanted) - set(ids))
            extra = sorted(set(ids) - set(wanted))
            raise CacheMismatchError(f"shards of {split} do not hold the given cuts: missing {missing[:3]}, "
                                     f"extra {extra[:3]} ({len(missing)} / {len(extra)} in all)")  # fmt: skip
    path = merged_manifest_path(cache_dir, split)
    with atomic_output(path) as tmp:
        CutSet.from_cuts(merged).to_file(tmp)
    info = {"num_cuts": len(ids), "cut_ids_sha256": cut_ids_sha256(ids), "num_shards": num_shards,
            "num_frames": sum(_num_stored_frames(c) for c in merged), "manifest": path.name}  # fmt: skip
    record_split(cache_dir, split, info)
    logging.info(f"merged {num_shards} shards of {split}: {len(ids)} cuts, {info['num_frames']} frames -> {path}")
    return path


def _num_stored_frames(cut) -> int:
    field = FIELD_PROBS if cut.has_custom(FIELD_PROBS) else FIELD_DENSE
    return int(cut.custom[field].shape[0])


def has_soft_targets(cut) -> bool:
    return cut.has_custom(FIELD_DENSE) or (cut.has_custom(FIELD_IDS) and cut.has_custom(FIELD_PROBS))


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
        stored = _num_stored_frames(src)
        if cut.num_frames is not None and cut.num_frames != stored:
            raise CacheMismatchError(f"cut {cut.id} has {cut.num_frames} frames but its soft targets have {stored}")
        for name in (*fields, FIELD_NUM_PDFS):
            cut = cut.with_custom(name, src.custom[name])
        out.append(cut)
    return CutSet.from_cuts(out)


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
