"""The on-disk soft-target cache: ensemble posteriors at temperature T as lhotse custom fields on cuts.

Every name is imported from this package (``from asr_kd.kd.cache import ...``); its modules:

    build.py     the cache stage: teachers -> ensemble posteriors -> shards -> merge (``build_cache``)
    metadata.py  ``metadata.json``: what a cache holds, and the checks that it is what a run asks for
    layout.py    file names, shard assignment, custom field names
    writer.py    ``SoftTargetWriter`` (one shard), ``write_soft_target_shards``, ``merge_soft_target_shards``
    reader.py    ``load_soft_target_cuts``, ``SoftTargetIndex`` (lookup by cut id), ``check_cache_covers``,
                 ``soft_targets_of``, ``collate_soft_targets``
    topk.py      top-k storage and the one rule that turns it back into full distributions

Usage (what ``build_cache`` does; every rank runs the first two calls, rank 0 the merge once all ranks
are done)::

    from asr_kd.kd.cache import (cache_metadata, collate_soft_targets, load_soft_target_cuts,
                                 merge_soft_target_shards, prepare_cache_dir, write_soft_target_shards)
    prepare_cache_dir(cache_dir, cache_metadata(teacher_paths, temperature=2.0, num_pdfs=87, k=16))
    write_soft_target_shards(cuts, posteriors_fn, cache_dir, "train", num_shards=8, rank=r, world_size=w)
    merge_soft_target_shards(cache_dir, "train", num_shards=8)              # -> cuts_soft_train.jsonl.gz

    # the distill stage: its own training cuts, their soft targets looked up by cut id
    load_soft_target_cuts(cache_dir, "train", expected={"temperature": 2.0, "num_pdfs": 87})  # checks
    check_cache_covers(cache_dir, "train", training_cut_ids)
    index = SoftTargetIndex.of_split(cache_dir, "train")
    batch = collate_soft_targets(index.cuts_of(cuts_of_a_batch))  # (B, T, P) probabilities + frame counts

``posteriors_fn(list_of_cuts) -> [(T_i, P) probabilities]`` runs the teachers and ``ensemble_posteriors``.

Layout of ``cache_dir``::

    metadata.json                                    teachers + sha256, T, mode, weights, k, ... (cache_metadata)
    cuts_soft_<split>.jsonl.gz                       merged cut manifest, sorted by cut id (written last)
    shards/soft_targets_<split>.<i>-of-<n>.h5        one HDF5 file per shard (lhotse's numpy_hdf5 storage)
    shards/cuts_soft_<split>.<i>-of-<n>.jsonl.gz     its cuts; written only once the .h5 is complete

Shard i of n holds a contiguous slice of the split's sorted cut ids (``shard_slice``); rank r writes shards
r, r + w, r + 2w, ... (``shards_of_rank``). A shard is built in memory (an HDF5 image: one shard must fit
in RAM, so choose ``num_shards`` accordingly), written to ``shards/.tmp.<pid>.<name>.h5`` in one go,
renamed, and only then gets its manifest: the manifest marks a complete shard. A resumed run skips
complete shards and deletes partial ones (temporary files, or an .h5 without its manifest). A cut left
out (non-finite features) is listed in ``shards/skipped_<name>.json`` and, after the merge, in
``metadata.json`` (``num_skipped``, ``skipped_cut_ids``).

Locks and I/O errors: ``build_cache`` holds ``<cache_dir>/.lock-cache-<split>-rank<r>`` (a second run of
the same rank is refused with a ``StageError`` naming the holder) and every shard writer
``.lock-cache-shard-<name>`` (two runs never write one shard). A disk that fills, a file-size limit or an
I/O error while writing a shard raises ``OutputIOError``: nothing of that shard is left, complete shards
stay, and a rerun resumes from them.

Custom fields on each cut (lookup by cut id through the manifest, never by batch position):

- dense storage: ``soft_targets``, a ``TemporalArray`` of ``(T, P)`` float16 probabilities;
- top-k storage: ``soft_target_ids`` ``(T, k)`` int16 (int32 when P > 32768) pdf ids, most probable first,
  and ``soft_target_probs`` ``(T, k)`` float16, the teacher ensemble's probabilities as they are (not
  renormalised); the remaining mass ``1 - sum(top-k)`` is spread uniformly over the other P - k pdfs when
  a full distribution is needed (``topk.py``; the sparse loss uses the same rule);
- both: ``soft_target_num_pdfs`` (int).

``soft_targets_of(cut)`` gives the ``(T, P)`` float32 distribution either way; rows sum to 1 (a dense row
is divided by its sum, which removes the fp16 rounding of the total).
"""
from asr_kd.kd.cache.build import build_cache, ensemble_posteriors_fn
from asr_kd.kd.cache.layout import (
    FIELD_DENSE,
    FIELD_IDS,
    FIELD_NUM_PDFS,
    FIELD_PROBS,
    has_soft_targets,
    is_shard_complete,
    merged_manifest_path,
    num_stored_frames,
    shard_name,
    shard_paths,
    shard_slice,
    shards_of_rank,
)
from asr_kd.kd.cache.metadata import (
    CacheMismatchError,
    bytes_per_frame,
    cache_metadata,
    check_metadata,
    config_sha256,
    cut_ids_sha256,
    id_dtype_for,
    prepare_cache_dir,
    read_metadata,
)
from asr_kd.kd.cache.reader import (
    SoftTargetBatch,
    SoftTargetIndex,
    check_cache_covers,
    collate_soft_targets,
    load_soft_target_cuts,
    soft_targets_of,
)
from asr_kd.kd.cache.topk import densify_topk, topk_posteriors
from asr_kd.kd.cache.writer import (
    InMemoryHdf5Writer,
    SoftTargetWriter,
    merge_soft_target_shards,
    remove_partial_shard,
    write_soft_target_shards,
)

__all__ = [
    "FIELD_DENSE", "FIELD_IDS", "FIELD_NUM_PDFS", "FIELD_PROBS", "CacheMismatchError", "InMemoryHdf5Writer", "SoftTargetBatch",
    "SoftTargetIndex", "SoftTargetWriter", "build_cache", "bytes_per_frame", "cache_metadata", "check_cache_covers",
    "check_metadata", "collate_soft_targets",
    "config_sha256", "cut_ids_sha256", "densify_topk", "ensemble_posteriors_fn", "has_soft_targets", "id_dtype_for", "is_shard_complete",
    "load_soft_target_cuts", "merge_soft_target_shards", "merged_manifest_path", "num_stored_frames",
    "prepare_cache_dir", "read_metadata", "remove_partial_shard", "shard_name", "shard_paths", "shard_slice",
    "shards_of_rank", "soft_targets_of", "topk_posteriors", "write_soft_target_shards",
]  # fmt: skip
