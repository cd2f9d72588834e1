"""Collect the decode records of an experiment into ``results.json``, ``RESULTS.md`` and a plot.

Usage:
    from asr_kd.report import make_report
    results = make_report("exp/synth_digits")                     # reads exp/synth_digits/decode/result-*.json
    results = make_report("exp/synth_digits", decode_dir="exp/synth_digits/decode/test", plot=False)
    print(results["markdown"])

    asr-kd report exp/synth_digits [--decode-dir DIR] [--output RESULTS.md] [--no-plot]

Input: every ``result-<name>.json`` directly in ``decode_dir`` (default ``<exp_dir>/decode``; not
recursive), one per decoded model, as ``asr-kd decode`` writes them. Roles with a table of their own:
``teacher`` (several), ``ensemble``, ``student_hard``, ``student_kd``, ``student_hard_3pct``,
``student_kd_3pct``, ``student_kd_sweep``; any other role goes to an "other models" table. A missing role
leaves out its row or table (with a warning).

Files written (atomically):
    <exp_dir>/results.json            DESIGN.md's results schema (see ``summarize``)
    <exp_dir>/RESULTS.md              or ``output``: the Table 1 / Table 5 / temperature-sweep tables
    <exp_dir>/temperature_sweep.png   frame accuracy and WER against T (only with >= 2 sweep points)

Gain recovered (DESIGN.md): ``(acc(student_kd) - acc(student_hard)) / (acc(ensemble) - acc(student_hard))``,
and the same formula on WER; null when a model is missing or the denominator is 0.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from asr_kd.utils import atomic_output, write_json, write_text

#: roles with a row or table of their own, in the order of results.json's "models"
KNOWN_ROLES = (
    "teacher", "mean_teacher", "ensemble", "student_hard", "student_kd", "student_hard_3pct", "student_kd_3pct",
    "student_kd_sweep",
)  # fmt: skip
#: the two figures of merit (fractions); the gain formulas apply to both
_METRICS = ("frame_acc", "wer")
#: roles shown in the temperature sweep
SWEEP_ROLES = ("student_kd", "student_kd_sweep")
#: (field, expected, check) of every record; DESIGN.md's minimum plus what the tables use
_INT = (int,)
_NUM = (int, float)
_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("name", "a non-empty string", lambda v: isinstance(v, str) and v != ""),
    ("role", "a string or null (null: an 'other model')", lambda v: v is None or isinstance(v, str)),
    ("params", "an integer >= 0", lambda v: _is(v, _INT) and v >= 0),
    ("frame_acc", "a fraction in [0, 1] or null", lambda v: v is None or (_is(v, _NUM) and 0 <= v <= 1)),
    ("wer", "a fraction >= 0 or null", lambda v: v is None or (_is(v, _NUM) and v >= 0)),
    ("sub", "an integer >= 0", lambda v: _is(v, _INT) and v >= 0),
    ("ins", "an integer >= 0", lambda v: _is(v, _INT) and v >= 0),
    ("del", "an integer >= 0", lambda v: _is(v, _INT) and v >= 0),
    ("num_frames", "an integer >= 0", lambda v: _is(v, _INT) and v >= 0),
    ("num_words", "an integer >= 0", lambda v: _is(v, _INT) and v >= 0),
    ("test_set", "a string", lambda v: isinstance(v, str)),
)
_OPTIONAL_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("temperature", "a number > 0 or null", lambda v: v is None or (_is(v, _NUM) and v > 0)),
    ("train_fraction", "a fraction in (0, 1] or null", lambda v: v is None or (_is(v, _NUM) and 0 < v <= 1)),
    ("rtf", "a number >= 0 or null", lambda v: v is None or (_is(v, _NUM) and v >= 0)),
    ("models", "a list of checkpoint paths", lambda v: isinstance(v, list)),
)


def _is(value: Any, types: tuple) -> bool:
    return isinstance(value, types) and not isinstance(value, bool) and not (
        isinstance(value, float) and not math.isfinite(value)
    )


# ------------------------------------------------------------------------------------------- input
def load_record(path: Path | str) -> dict:
    """One decode record, validated; ``ValueError`` naming the file and the field when malformed."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object (one decode record), got {type(record).__name__}")
    for field, expected, check in _FIELDS:
        if field not in record:
            raise ValueError(f"{path}: field `{field}` is missing (expected {expected})")
        if not check(record[field]):
            raise ValueError(f"{path}: field `{field}` must be {expected}, got {record[field]!r}")
    for field, expected, check in _OPTIONAL_FIELDS:
        if field in record and not check(record[field]):
            raise ValueError(f"{path}: field `{field}` must be {expected}, got {record[field]!r}")
    return record


def load_records(decode_dir: Path | str) -> list[dict]:
    """Every ``result-*.json`` directly in ``decode_dir``, sorted by file name."""
    decode_dir = Path(decode_dir)
    paths = sorted(decode_dir.glob("result-*.json"))
    if not paths:
        raise FileNotFoundError(f"no decode records (result-*.json) in {decode_dir}: run `asr-kd decode` first")
    records, seen = [], {}
    for path in paths:
        record = load_record(path)
        if record["name"] in seen:
            raise ValueError(f"{path}: field `name` {record['name']!r} is also the name in {seen[record['name']]}")
        seen[record["name"]] = path
        records.append(record)
    return records


# ------------------------------------------------------------------------------------------- figures
def gain_recovered(student_hard: float | None, student_kd: float | None, ensemble: float | None) -> float | None:
    """``(kd - hard) / (ensemble - hard)``: the share of the ensemble's gain the distilled student keeps.

    Works on frame accuracies and on WERs alike; None when a value is missing or the denominator is 0.
    """
    if student_hard is None or student_kd is None or ensemble is None or ensemble == student_hard:
        return None
    return (student_kd - student_hard) / (ensemble - student_hard)


def _mean(values: list) -> float | None:
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def mean_teacher(teachers: list[dict]) -> dict:
    """The ``mean_teacher`` record: frame_acc, wer, sub, ins, del and params averaged over ``teachers``."""
    record = {k: _mean([t[k] for t in teachers]) for k in ("frame_acc", "wer", "sub", "ins", "del", "params")}
    record.update(
        name="mean_teacher", role="mean_teacher", members=[t["name"] for t in teachers],
        num_frames=teachers[0]["num_frames"], num_words=teachers[0]["num_words"], test_set=teachers[0]["test_set"],
    )  # fmt: skip
    return record


def _one(by_role: dict[str, list[dict]], role: str) -> dict | None:
    """The record of a role that has one (the first by file name if there are several)."""
    found = by_role.get(role, [])
    return found[0] if found else None


def _field(record: dict | None, key: str) -> float | None:
    return None if record is None else record.get(key)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def summarize(records: list[dict], config: dict | None = None) -> dict:
    """The results schema from the decode records.

    Returns ``{"test_set", "num_frames", "num_words", "config", "models": [records + mean_teacher],
    "gain_recovered": {"frame_acc", "wer"}, "ensemble_gain": {"frame_acc", "wer"} (ensemble minus mean
    teacher), "table5": {"rows": [...], "gap_recovered": {"frame_acc", "wer"}}, "temperature_sweep":
    [{"name", "role", "temperature", "alpha", "frame_acc", "wer"}, ...] sorted by T}``.
    Fractions throughout (not %); null where a model is missing.
    """
    by_role: dict[str, list[dict]] = {}
    for r in records:
        by_role.setdefault(r["role"], []).append(r)
    for role in (r for r in KNOWN_ROLES if r != "mean_teacher"):
        if role not in by_role:
            logging.warning(f"no decode record with role {role!r}: its rows are left out of the report")
        elif role not in ("teacher", "student_kd_sweep") and len(by_role[role]) > 1:
            first = by_role[role][0]["name"]
            logging.warning(f"{len(by_role[role])} records with role {role!r}; the tables use {first!r}")
    if by_role.get("teacher"):
        by_role["mean_teacher"] = [mean_teacher(by_role["teacher"])]
    by_role["student_kd_sweep"] = sorted(by_role.get("student_kd_sweep", []), key=_sweep_key)
    models = [r for role in KNOWN_ROLES for r in by_role.get(role, [])]
    models += sorted((r for r in records if r["role"] not in KNOWN_ROLES), key=lambda r: r["name"])

    test_sets = sorted({r["test_set"] for r in records})
    if len(test_sets) > 1:
        logging.warning(f"the decode records are on different test sets: {test_sets}")
    hard, kd, ens, mean = (_one(by_role, k) for k in ("student_hard", "student_kd", "ensemble", "mean_teacher"))
    reference = ens or mean or records[0]
    return {
        "test_set": ", ".join(test_sets),
        "num_frames": reference["num_frames"],
        "num_words": reference["num_words"],
        "config": config or {},
        "models": models,
        "gain_recovered": {k: gain_recovered(_field(hard, k), _field(kd, k), _field(ens, k)) for k in _METRICS},
        "ensemble_gain": {k: _diff(_field(ens, k), _field(mean, k)) for k in _METRICS},
        "table5": _table5(by_role),
        "temperature_sweep": _temperature_sweep(by_role),
    }


def _sweep_key(record: dict) -> tuple:
    t = record.get("temperature")
    return (t is None, t or 0.0, record["name"])


def _table5(by_role: dict[str, list[dict]]) -> dict:
    """Hard vs soft targets on the full and on the reduced training set (the paper's Table 5)."""
    rows = []
    for role, targets in (("student_hard", "hard"), ("student_hard_3pct", "hard"), ("student_kd_3pct", "soft"),
                          ("student_kd", "soft")):  # fmt: skip
        r = _one(by_role, role)
        if r is not None:
            rows.append(dict(name=r["name"], role=role, targets=targets, train_fraction=r.get("train_fraction"),
                             frame_acc=r["frame_acc"], wer=r["wer"]))  # fmt: skip
    full, hard_few, soft_few = (_one(by_role, k) for k in ("student_hard", "student_hard_3pct", "student_kd_3pct"))
    # share of the gap between hard labels on few data and hard labels on all data that soft targets close
    gap = {k: gain_recovered(_field(hard_few, k), _field(soft_few, k), _field(full, k)) for k in _METRICS}
    return {"rows": rows, "gap_recovered": gap}


def _temperature_sweep(by_role: dict[str, list[dict]]) -> list[dict]:
    points = []
    for r in sorted((r for role in SWEEP_ROLES for r in by_role.get(role, [])), key=_sweep_key):
        if r.get("temperature") is None:
            logging.warning(f"{r['name']!r} ({r['role']}) has no temperature: left out of the sweep")
            continue
        points.append({k: r.get(k) for k in ("name", "role", "temperature", "alpha", "frame_acc", "wer")})
    return points


# ------------------------------------------------------------------------------------------- markdown
def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _count(x: float | None) -> str:
    return "n/a" if x is None else (f"{x:d}" if isinstance(x, int) else f"{x:.1f}")


def _wer_cell(r: dict) -> str:
    return f"{_pct(r['wer'])} ({_count(r['sub'])}/{_count(r['ins'])}/{_count(r['del'])})"


def _params(n: float | None) -> str:
    if n is None:
        return "n/a"
    if n < 1e3:
        return f"{n:g}"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _size_ratio(teacher_params: float | None, params: float | None) -> str:
    """Teacher params / model params as "N.Nx smaller" (or "N.Nx larger")."""
    if not teacher_params or not params:
        return "n/a"
    ratio = teacher_params / params
    if abs(ratio - 1) < 0.05:
        return "1.0x"
    return f"{ratio:.1f}x smaller" if ratio > 1 else f"{1 / ratio:.1f}x larger"


def _arch(r: dict) -> str:
    """``tdnn / teacher``; for an ensemble ``3 x tdnn / teacher`` or ``tdnn / teacher + dnn / teacher``."""
    arch, size = r.get("arch"), r.get("size")
    if isinstance(arch, list) and isinstance(size, list) and len(arch) == len(size):
        members = [f"{a} / {s}" for a, s in zip(arch, size)]
        return f"{len(members)} x {members[0]}" if len(set(members)) == 1 else " + ".join(members)
    return " / ".join(str(x) for x in (arch, size) if x) or "n/a"


def _label(r: dict) -> str:
    role, t = r["role"], r.get("temperature")
    if role == "teacher":
        return r["name"]
    if role == "mean_teacher":
        return f"mean of {len(r['members'])} teachers"
    if role == "ensemble":
        return f"ensemble of {len(r['models'])} teachers" if r.get("models") else f"ensemble ({r['name']})"
    if role == "student_hard":
        return f"student, hard labels ({r['name']})"
    if role == "student_kd":
        return f"student, distilled{f' T={t:g}' if t is not None else ''} ({r['name']})"
    return f"{r['name']} ({role})" if role else r["name"]


def _model_table(rows: list[dict], teacher_params: float | None, gain: dict | None = None) -> list[str]:
    lines = [
        "| model | arch / size | params | size vs teacher | frame acc % | WER % (S/I/D) | gain recovered |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cell = ""
        if gain is not None and r["role"] == "student_kd":
            cell = f"{_share(gain['frame_acc'])} (frame acc), {_share(gain['wer'])} (WER)"
        arch = "n/a" if r["role"] == "mean_teacher" else _arch(r)
        lines.append(
            f"| {_label(r)} | {arch} | {_params(r['params'])} | {_size_ratio(teacher_params, r['params'])} "
            f"| {_pct(r['frame_acc'])} | {_wer_cell(r)} | {cell} |"
        )
    return lines


def render_markdown(results: dict, title: str = "results") -> str:
    """The report's markdown: Table 1, Table 5, the temperature sweep, other models, decoding speed."""
    models = results["models"]
    by_role: dict[str, list[dict]] = {}
    for r in models:
        by_role.setdefault(r["role"], []).append(r)
    mean = (by_role.get("mean_teacher") or [None])[0]
    teacher_params = mean["params"] if mean else None
    out = [
        f"# {title}", "",
        f"Test set `{results['test_set']}`: {results['num_frames']} frames, {results['num_words']} words. "
        "Frame accuracy and WER in %; S/I/D: substitutions / insertions / deletions.", "",
        "## Table 1: ensemble and distilled student", "",
    ]  # fmt: skip
    table1 = [r for role in ("teacher", "mean_teacher", "ensemble", "student_hard", "student_kd")
              for r in by_role.get(role, [])]  # fmt: skip
    if table1:
        out += _model_table(table1, teacher_params, results["gain_recovered"])
    else:
        out.append("No teacher, ensemble or student records.")
    gain, ens_gain = results["gain_recovered"], results["ensemble_gain"]
    out += [
        "",
        f"Ensemble over the mean teacher: {_signed_points(ens_gain['frame_acc'])} frame accuracy, "
        f"{_signed_points(ens_gain['wer'])} WER. Gain recovered by distillation "
        "(kd - hard) / (ensemble - hard): "
        f"{_share(gain['frame_acc'])} of the frame-accuracy gain, {_share(gain['wer'])} of the WER gain.",
        "Paper (Hinton et al. 2015, Table 1): 58.9% / 61.1% / 60.8% frame accuracy and 10.9% / 10.7% / 10.7% "
        "WER for baseline / 10x ensemble / distilled: 86% of the frame-accuracy gain recovered.",
    ]
    out += _table5_lines(results["table5"])
    out += _sweep_lines(results["temperature_sweep"], (by_role.get("student_hard") or [None])[0])
    others = [r for r in models if r["role"] not in KNOWN_ROLES]
    if others:
        out += ["", "## Other models", ""] + _model_table(others, teacher_params)
    scales = [f"{r['name']} {r['decode_config']['tuning']['best']:g}" for r in models
              if isinstance(r.get("decode_config"), dict) and isinstance(r["decode_config"].get("tuning"), dict)]
    if scales:
        out += ["", "Acoustic scale of each model, tuned on the development cuts: " + ", ".join(scales) + "."]
    speeds = [f"{r['name']} {r['rtf']:.4f}" for r in models if r.get("rtf") is not None]
    if speeds:
        out += ["", "## Decoding speed", "", "Real-time factor per CPU core of the search (search seconds x "
                "decoding processes / audio seconds; lower is faster): " + ", ".join(speeds) + "."]  # fmt: skip
    return "\n".join(out) + "\n"


def _signed_points(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f} points"


def _table5_lines(table5: dict) -> list[str]:
    if not table5["rows"]:
        return []
    out = ["", "## Table 5: soft targets on a fraction of the training data", "",
           "| model | training targets | % of training data | frame acc % | WER % |",
           "|---|---|---|---|---|"]  # fmt: skip
    note = False
    for row in table5["rows"]:
        fraction = row["train_fraction"]
        note |= fraction is None
        share = "100 *" if fraction is None else f"{100 * fraction:g}"
        out.append(f"| {row['name']} | {row['targets']} | {share} | {_pct(row['frame_acc'])} | {_pct(row['wer'])} |")
    gap = table5["gap_recovered"]
    out.append("")
    if note:
        out.append("\\* no `train_fraction` in the training config: the whole training set.")
    out.append(
        f"Soft targets on the reduced set close {_share(gap['frame_acc'])} of the frame-accuracy gap (and "
        f"{_share(gap['wer'])} of the WER gap) between hard labels on the reduced set and on the full set. "
        "Paper (3% of the data): hard 44.5%, soft 57.0%, full data 58.9% frame accuracy (87% closed)."
    )
    return out


def _sweep_lines(sweep: list[dict], hard: dict | None) -> list[str]:
    if not sweep:
        return []
    out = ["", "## Temperature sweep (distilled students)", "", "| T | model | alpha | frame acc % | WER % |",
           "|---|---|---|---|---|"]  # fmt: skip
    for p in sweep:
        alpha = "n/a" if p["alpha"] is None else f"{p['alpha']:g}"
        out.append(f"| {p['temperature']:g} | {p['name']} | {alpha} | {_pct(p['frame_acc'])} | {_pct(p['wer'])} |")
    if hard is not None:
        out.append(f"| hard labels | {hard['name']} | 0 | {_pct(hard['frame_acc'])} | {_pct(hard['wer'])} |")
    return out


# ------------------------------------------------------------------------------------------- plot
def plot_temperature_sweep(results: dict, path: Path | str) -> Path | None:
    """Frame accuracy and WER (%) against T, with the hard-label student and the ensemble as lines.

    Written atomically to ``path`` (PNG); skipped (returns None) with fewer than 2 sweep points.
    """
    points = [p for p in results["temperature_sweep"] if p["frame_acc"] is not None or p["wer"] is not None]
    if len(points) < 2:
        logging.info(f"{len(points)} temperature-sweep point(s): no plot")
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = {r["role"]: r for r in results["models"] if r["role"] in ("student_hard", "ensemble")}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "frame_acc", "frame accuracy (%)"), (axes[1], "wer", "WER (%)")):
        xy = [(p["temperature"], 100 * p[key]) for p in points if p[key] is not None]
        if xy:
            ax.plot(*zip(*xy), "o-", label="distilled student")
        for role, style, name in (("student_hard", "--", "hard-label student"), ("ensemble", ":", "ensemble")):
            if role in refs and refs[role][key] is not None:
                ax.axhline(100 * refs[role][key], linestyle=style, color="gray" if role == "ensemble" else "red",
                           label=name)  # fmt: skip
        ax.set_xlabel("temperature T")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", framealpha=0.6)
    fig.suptitle(f"Distillation temperature sweep ({results['test_set']})")
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    logging.info(f"wrote {path}")
    return path


# ------------------------------------------------------------------------------------------- entry
def make_report(
    exp_dir: Path | str, decode_dir: Path | str | None = None, output: Path | str | None = None, plot: bool = True
) -> dict:
    """Read the decode records, write results.json, the markdown report and the sweep plot.

    Args:
        exp_dir: ``exp/<recipe>``; ``<exp_dir>/recipe_config.json`` (if present) becomes ``config``.
        decode_dir: where the ``result-*.json`` records are; default ``<exp_dir>/decode``.
        output: the markdown file; default ``<exp_dir>/RESULTS.md``.
        plot: write ``<exp_dir>/temperature_sweep.png`` (when there are >= 2 sweep points).

    Returns:
        ``summarize``'s dict (as written to results.json) plus ``"markdown"``: the report's text.
    """
    exp_dir = Path(exp_dir)
    decode_dir = Path(decode_dir) if decode_dir is not None else exp_dir / "decode"
    records = load_records(decode_dir)
    config_path = exp_dir / "recipe_config.json"
    config = {}
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path}: not valid JSON ({e})") from e
    results = summarize(records, config)
    write_json(exp_dir / "results.json", results)
    markdown = render_markdown(results, title=f"{exp_dir.name}: results")
    output = Path(output) if output is not None else exp_dir / "RESULTS.md"
    write_text(output, markdown)
    logging.info(f"{len(records)} decode records from {decode_dir}: wrote {exp_dir / 'results.json'}, {output}")
    if plot:
        plot_temperature_sweep(results, exp_dir / "temperature_sweep.png")
    return {**results, "markdown": markdown}
