"""Where a soft-target cache keeps what: file names, shard assignment, custom field names (see the package doc)."""

from __future__ import annotations

import re
from pathlib import Path

SHARDS_DIR = "shards"
FIELD_DENSE = "soft_targets"
FIELD_IDS = "soft_target_ids"
FIELD_PROBS = "soft_target_probs"
FIELD_NUM_PDFS = "soft_target_num_pdfs"
DUPLICATE_SUFFIX = re.compile(r"_dup\d+$")  # lhotse's suffix on cuts repeated to give every DDP rank a batch


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


def skipped_path(cache_dir: Path | str, name: str) -> Path:
    """``shards/skipped_<name>.json``: ``{cut id: reason}`` of the cuts shard ``name`` left out."""
    return Path(cache_dir) / SHARDS_DIR / f"skipped_{name}.json"


def merged_manifest_path(cache_dir: Path | str, split: str) -> Path:
    return Path(cache_dir) / f"cuts_soft_{split}.jsonl.gz"


def is_shard_complete(cache_dir: Path | str, name: str) -> bool:
    return shard_paths(cache_dir, name)[1].is_file()


def num_stored_frames(cut) -> int:
    field = FIELD_PROBS if cut.has_custom(FIELD_PROBS) else FIELD_DENSE
    return int(cut.custom[field].shape[0])


def has_soft_targets(cut) -> bool:
    return cut.has_custom(FIELD_DENSE) or (cut.has_custom(FIELD_IDS) and cut.has_custom(FIELD_PROBS))
