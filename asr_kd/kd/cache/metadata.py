"""``metadata.json`` of a soft-target cache: what it holds, and the checks that it is what a run asks for.

Usage::

    from asr_kd.kd.cache import cache_metadata, prepare_cache_dir
    meta = cache_metadata(["exp/x/teacher-0/best-valid-acc.pt", "exp/x/teacher-1/best-valid-acc.pt"], temperature=2.0,
                          storage="topk", k=16, num_pdfs=87, feature_config=fbank_config)
    prepare_cache_dir("exp/x/cache", meta)    # writes metadata.json, or checks the one already there

The file holds the fields of ``CONFIG_FIELDS`` (teachers as ``{"path", "sha256"}``, the temperature, the
combination mode and weights, the storage ``"dense"``/``"topk"`` with k, the value and id dtypes, the
remaining-mass rule, the feature config and its sha256, num_pdfs), plus ``"splits"``: per merged split,
``num_cuts``, ``cut_ids_sha256`` (sha256 of the sorted ids, one per line), ``num_frames``, ``num_shards``,
the ``manifest`` file name and ``cuts_path``, the cut manifest the split was built from (null when the
writer was not given one).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from asr_kd.kd.ensemble import COMBINATION_MODES, check_temperature, validate_weights
from asr_kd.utils import file_sha256, write_json

FORMAT_VERSION = 1
METADATA_NAME = "metadata.json"
STORAGE_MODES = ("dense", "topk")
VALUE_DTYPE = "float16"
REMAINING_MASS_RULE = "uniform"  # 1 - sum(top-k) spread over the other P - k pdfs: see asr_kd.kd.cache.topk
CONFIG_FIELDS = (
    "format_version", "teachers", "temperature", "combination", "weights", "storage", "k", "dtype",
    "id_dtype", "remaining_mass", "feature_config_sha256", "num_pdfs",
)  # fmt: skip


class CacheMismatchError(ValueError):
    """The soft-target cache does not hold what the run asks for (the message names the field)."""


def config_sha256(config: Any) -> str:
    """sha256 of ``config`` as canonical JSON (sorted keys), e.g. a feature extractor's config dict."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def cut_ids_sha256(cut_ids: Iterable[str]) -> str:
    """sha256 of the sorted cut ids, one per line: the same set of cuts gives the same hash."""
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(cut_ids)).encode()).hexdigest()


def id_dtype_for(num_pdfs: int) -> str:
    """``"int16"`` when every pdf id fits (num_pdfs <= 32768), else ``"int32"``."""
    return "int16" if num_pdfs <= 2**15 else "int32"


def bytes_per_frame(mode: str, k: int | None, num_pdfs: int) -> int:
    """Payload bytes per frame: dense ``2 P`` (fp16); top-k ``k (2 + id bytes)`` (fp16 + int16/int32)."""
    if mode == "dense":
        return 2 * num_pdfs
    if mode == "topk":
        if k is None or not 1 <= k <= num_pdfs:
            raise ValueError(f"k must be in [1, num_pdfs={num_pdfs}] for top-k storage, got {k}")
        return k * (2 + (2 if id_dtype_for(num_pdfs) == "int16" else 4))
    raise ValueError(f"storage mode must be one of {STORAGE_MODES}, got {mode!r}")


def teacher_records(teachers: Sequence[Path | str | dict]) -> list[dict]:
    """``[{"path", "sha256"}]`` of teacher checkpoints (paths are hashed; dicts must carry ``sha256``)."""
    records = []
    for t in teachers:
        if isinstance(t, dict):
            if "sha256" not in t:
                raise ValueError(f"a teacher record needs a 'sha256' field, got {t}")
            records.append({"path": str(t.get("path", "")), "sha256": t["sha256"]})
        else:
            if not Path(t).is_file():
                raise FileNotFoundError(f"teacher checkpoint {t} does not exist")
            records.append({"path": str(t), "sha256": file_sha256(t)})
    return records


def cache_metadata(
    teachers: Sequence[Path | str | dict],
    temperature: float,
    num_pdfs: int,
    combination: str = "arithmetic",
    weights: Sequence[float] | None = None,
    storage: str = "topk",
    k: int | None = 16,
    feature_config: dict | None = None,
) -> dict:
    """The metadata of a cache (without ``splits``); validates every field."""
    if combination not in COMBINATION_MODES:
        raise ValueError(f"combination must be one of {COMBINATION_MODES}, got {combination!r}")
    bytes_per_frame(storage, k, num_pdfs)  # validates storage, k and num_pdfs
    records = teacher_records(teachers)
    return {
        "format_version": FORMAT_VERSION,
        "teachers": records,
        "temperature": check_temperature(temperature),
        "combination": combination,
        "weights": [float(w) for w in validate_weights(weights, len(records))],
        "storage": storage,
        "k": int(k) if storage == "topk" else None,
        "dtype": VALUE_DTYPE,
        "id_dtype": id_dtype_for(num_pdfs) if storage == "topk" else None,
        "remaining_mass": REMAINING_MASS_RULE if storage == "topk" else None,
        "feature_config": feature_config,
        "feature_config_sha256": config_sha256(feature_config) if feature_config is not None else None,
        "num_pdfs": int(num_pdfs),
    }


def _normalise_expected(expected: dict) -> dict:
    out = dict(expected)
    if "feature_config" in out:
        config = out.pop("feature_config")
        out.setdefault("feature_config_sha256", config_sha256(config) if config is not None else None)
    unknown = sorted(set(out) - set(CONFIG_FIELDS))
    if unknown:
        known = [*CONFIG_FIELDS, "feature_config"]
        raise ValueError(f"unknown expected cache field(s) {unknown}; known: {known}")
    if "teachers" in out:
        out["teachers"] = teacher_records(out["teachers"])
    return out


def _mismatch(field: str, cached: Any, requested: Any) -> str | None:
    if field == "teachers":
        if len(cached) != len(requested):
            return f"cache has {len(cached)} teachers != requested {len(requested)}"
        for i, (c, r) in enumerate(zip(cached, requested)):
            if c["sha256"] != r["sha256"]:
                return (f"cache teachers differ: teacher {i} sha256 {c['sha256'][:12]} ({c['path']}) "
                        f"!= requested {r['sha256'][:12]} ({r['path']})")  # fmt: skip
        return None
    if field == "temperature":
        same = math.isclose(float(cached), float(requested), rel_tol=1e-9)
    elif field == "weights":
        same = len(cached) == len(requested) and all(
            math.isclose(c, r, abs_tol=1e-6) for c, r in zip(cached, requested)
        )
    else:
        same = cached == requested
    return None if same else f"cache {field} {cached!r} != requested {requested!r}"


def check_metadata(cached: dict, expected: dict, where: Path | str = "") -> None:
    """Raise CacheMismatchError naming the first field of ``expected`` that ``cached`` does not match.

    ``expected`` holds any of ``CONFIG_FIELDS`` (e.g. a whole ``cache_metadata(...)``), and may give
    ``feature_config`` (compared by its sha256) or ``teachers`` as checkpoint paths (compared by sha256).
    """
    for field, requested in _normalise_expected(expected).items():
        if field == "weights" and requested is None:  # uniform over the cache's teachers
            requested = [float(w) for w in validate_weights(None, len(cached.get("teachers", [])) or 1)]
        if field not in cached:
            raise CacheMismatchError(f"cache has no field {field!r} (requested {requested!r}) ({where})")
        message = _mismatch(field, cached[field], requested)
        if message:
            raise CacheMismatchError(f"{message} ({where})")


def metadata_path(cache_dir: Path | str) -> Path:
    return Path(cache_dir) / METADATA_NAME


def read_metadata(cache_dir: Path | str) -> dict:
    path = metadata_path(cache_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a soft-target cache (run the cache stage)")
    return json.loads(path.read_text())


def prepare_cache_dir(cache_dir: Path | str, metadata: dict) -> dict:
    """Write ``metadata.json`` into a new cache, or check that an existing cache was made the same way.

    Safe to call from every rank. Raises CacheMismatchError when the cache exists with other teachers,
    temperature, ... (resuming it would mix soft targets of two configurations).
    """
    path = metadata_path(cache_dir)
    config = {f: metadata[f] for f in CONFIG_FIELDS}
    if path.is_file():
        existing = read_metadata(cache_dir)
        check_metadata(existing, config, where=f"{path}: use another cache dir or delete this one")
        return existing
    full = {**metadata, "splits": {}}
    write_json(path, full)
    return full


def record_split(cache_dir: Path | str, split: str, info: dict) -> None:
    """Store the merged ``split``'s ids hash, counts and manifest name in ``metadata.json`` (one writer)."""
    meta = read_metadata(cache_dir)
    meta.setdefault("splits", {})[split] = info
    write_json(metadata_path(cache_dir), meta)
