"""Collect the decode records of an experiment into ``results.json``, ``RESULTS.md`` and a plot.

Usage:
    from asr_kd.decode.report import make_report
    results = make_report("exp/my_recipe")                     # reads exp/my_recipe/decode/result-*.json
    results = make_report("exp/my_recipe", decode_dir="exp/my_recipe/decode/test", plot=False)
    print(results["markdown"])

    asr-kd report exp/my_recipe [--decode-dir DIR] [--output RESULTS.md] [--no-plot]

Input: every ``result-<name>.json`` directly in ``decode_dir`` (default ``<exp_dir>/decode``; not
recursive), one per decoded model, as ``asr-kd decode`` writes them (:mod:`asr_kd.decode.record`). Roles with a table of their own:
``teacher`` (several), ``ensemble``, ``student_hard``, ``student_kd``, ``student_hard_3pct``,
``student_kd_3pct``, ``student_kd_sweep``; any other role goes to an "other models" table. A missing role
leaves out its row or table (with a warning).

Files written (atomically):
    <exp_dir>/results.json            the results schema of docs/design.md (see ``summarize``)
    <exp_dir>/RESULTS.md              or ``output``: the Table 1 / Table 5 / temperature-sweep tables
    <exp_dir>/temperature_sweep.png   frame accuracy and WER against T (only with >= 2 sweep points)

Gain recovered (docs/design.md): ``(acc(student_kd) - acc(student_hard)) / (acc(ensemble) - acc(student_hard))``,
and the same formula on WER; null when a model is missing or the denominator is 0.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from asr_kd.decode.record import KNOWN_ROLES, load_record
from asr_kd.decode.tables import render_markdown
from asr_kd.utils import atomic_output, write_json, write_text

#: the two figures of merit (fractions); the gain formulas apply to both
_METRICS = ("frame_acc", "wer")
#: roles shown in the temperature sweep
SWEEP_ROLES = ("student_kd", "student_kd_sweep")


# ------------------------------------------------------------------------------------------- input
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
