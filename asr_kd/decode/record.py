"""The decode record: ``result-<name>.json``, one per decoded model, written by ``asr-kd decode`` and read by
``asr-kd report``. Both sides use this one schema (field list in docs/design.md).

Usage::

    from asr_kd.decode.record import load_record, write_record
    write_record(output_dir / f"result-{name}.json", record)    # validates every field first
    record = load_record(path)                                  # ValueError naming the file and the field

Fractions (frame_acc, wer) are in [0, 1], times in seconds; ``frame_acc`` is None when no decoded cut has
frame labels. ``seed`` is the training seed of a single model (None for an ensemble): the report pairs
students of two configurations by it. ``transfer`` says whether a student was distilled on an unlabeled
transfer set besides the labeled training cuts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, NamedTuple

from asr_kd.utils import write_json

#: roles with a row or table of their own in the report, in the order of results.json's "models"; any
#: other role (or null) is reported as an "other model"
KNOWN_ROLES = ("teacher", "mean_teacher", "ensemble", "student_hard", "student_kd", "student_kd_sweep", "gmm")


def _is_num(value: Any, types: tuple = (int, float)) -> bool:
    return isinstance(value, types) and not isinstance(value, bool) and not (
        isinstance(value, float) and not math.isfinite(value)
    )


def _count(v: Any) -> bool:
    return _is_num(v, (int,)) and v >= 0


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


class Field(NamedTuple):
    name: str
    expected: str  # what the value must be, for error messages
    check: Callable[[Any], bool]


#: every field of a decode record, in file order
FIELDS: tuple[Field, ...] = (
    Field("name", "a non-empty string", lambda v: isinstance(v, str) and v != ""),
    Field("role", "a string or null (null: an 'other model')", _optional(lambda v: isinstance(v, str))),
    Field("models", "a list of model file paths", _strings),
    Field("checkpoint_sha256", "a list of sha256 strings, one per model", _strings),
    Field("arch", "a string, a list of strings (ensemble) or null",
          _optional(lambda v: isinstance(v, str) or _strings(v))),
    Field("size", "a string, a list of strings (ensemble) or null",
          _optional(lambda v: isinstance(v, str) or _strings(v))),
    Field("params", "an integer >= 0", _count),
    Field("temperature", "a number > 0 or null", _optional(lambda v: _is_num(v) and v > 0)),
    Field("alpha", "a number in [0, 1] or null", _optional(lambda v: _is_num(v) and 0 <= v <= 1)),
    Field("train_fraction", "a fraction in (0, 1] or null", _optional(lambda v: _is_num(v) and 0 < v <= 1)),
    Field("seed", "an integer (the training seed) or null (an ensemble)", _optional(lambda v: _is_num(v, (int,)))),
    Field("transfer", "true when the student was also distilled on unlabeled transfer cuts, else false",
          lambda v: isinstance(v, bool)),
    Field("test_set", "a string", lambda v: isinstance(v, str)),
    Field("frame_acc", "a fraction in [0, 1] or null", _optional(lambda v: _is_num(v) and 0 <= v <= 1)),
    Field("wer", "a fraction >= 0 or null", _optional(lambda v: _is_num(v) and v >= 0)),
    Field("sub", "an integer >= 0", _count),
    Field("ins", "an integer >= 0", _count),
    Field("del", "an integer >= 0", _count),
    Field("num_frames", "an integer >= 0", _count),
    Field("num_words", "an integer >= 0", _count),
    Field("num_utts", "an integer >= 0", _count),
    Field("num_skipped", "an integer >= 0", _count),
    Field("num_no_final", "an integer >= 0 (cuts whose search ended without a final state)", _count),
    Field("num_retries", "an integer >= 0 (searches again with a doubled beam)", _count),
    Field("decode_config", "an object", lambda v: isinstance(v, dict)),
    Field("audio_seconds", "a number >= 0", lambda v: _is_num(v) and v >= 0),
    Field("forward_seconds", "a number >= 0", lambda v: _is_num(v) and v >= 0),
    Field("decode_seconds", "a number >= 0", lambda v: _is_num(v) and v >= 0),
    Field("rtf", "a number >= 0 or null", _optional(lambda v: _is_num(v) and v >= 0)),
)  # fmt: skip
FIELD_NAMES = tuple(f.name for f in FIELDS)


def validate_record(record: Any, where: Path | str = "decode record") -> dict:
    """``record`` if it has exactly the fields of ``FIELDS``, each valid; else ValueError naming ``where``
    and the first offending field."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object (one decode record), got {type(record).__name__}")
    for field in FIELDS:
        if field.name not in record:
            raise ValueError(f"{where}: field `{field.name}` is missing (expected {field.expected}); "
                             "re-run `asr-kd decode` to rewrite it")  # fmt: skip
        if not field.check(record[field.name]):
            raise ValueError(f"{where}: field `{field.name}` must be {field.expected}, got {record[field.name]!r}")
    unknown = sorted(set(record) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; a decode record has {list(FIELD_NAMES)}")
    return record


def load_record(path: Path | str) -> dict:
    """One decode record, validated (``validate_record``)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    return validate_record(record, path)


def write_record(path: Path | str, record: dict) -> None:
    """Validate ``record`` and write it atomically."""
    write_json(path, validate_record(record, path))


#: training fractions are compared at this many decimals: 0.1 * 0.3 and 0.03 (or a sum of tenths and 1.0)
#: are one fraction, the float noise of how a recipe computed them
FRACTION_DIGITS = 12


def canonical_fraction(value: float | None) -> float:
    """A record's ``train_fraction`` as the report keys configurations by it (None, the whole set: 1.0)."""
    return 1.0 if value is None else round(float(value), FRACTION_DIGITS)


def same_fraction(a: float | None, b: float | None) -> bool:
    """Whether two training fractions are the same (:data:`FRACTION_DIGITS`; None is 1.0)."""
    tolerance = 10.0**-FRACTION_DIGITS
    return math.isclose(canonical_fraction(a), canonical_fraction(b), rel_tol=0.0, abs_tol=tolerance)


def find_configurations(configs: list[dict], role: str, fraction: float = 1.0,
                        transfer: bool = False) -> list[dict]:  # fmt: skip
    """The report's configurations (``asr_kd.decode.report.group_configurations``) of ``role`` on the
    training ``fraction`` (default the full data), with or without a transfer set, in their order."""
    return [c for c in configs if c["role"] == role and same_fraction(c["train_fraction"], fraction)
            and bool(c["transfer"]) == transfer]  # fmt: skip


def summary_line(record: dict) -> str:
    """``name: WER x% [S sub I ins D del / N words], frame acc y%, RTF z`` of a record."""
    acc = "n/a" if record["frame_acc"] is None else f"{100 * record['frame_acc']:.2f}%"
    rtf = "n/a" if record["rtf"] is None else f"{record['rtf']:.4f}"
    wer = "n/a" if record["wer"] is None else f"{100 * record['wer']:.2f}%"
    return (f"{record['name']}: WER {wer} [{record['sub']} sub {record['ins']} ins {record['del']} del / "
            f"{record['num_words']} words], frame acc {acc}, RTF {rtf}")  # fmt: skip
