"""Collect the decode records of an experiment into ``results.json``, ``RESULTS.md`` and plots.

Usage:
    from asr_kd.decode.report import make_report
    results = make_report("exp/my_recipe")                     # reads exp/my_recipe/decode/result-*.json
    results = make_report("exp/my_recipe", decode_dir="exp/my_recipe/decode/test", plot=False)
    print(results["markdown"])

    asr-kd report exp/my_recipe [--decode-dir DIR] [--output RESULTS.md] [--no-plot]

Input: every ``result-<name>.json`` directly in ``decode_dir`` (default ``<exp_dir>/decode``; not
recursive), one per decoded model, as ``asr-kd decode`` writes them (:mod:`asr_kd.decode.record`), and
beside each its ``utt-errors-<name>.tsv`` (the paired WER tests). Roles: ``teacher`` (several),
``ensemble``, ``student_hard`` and ``student_kd`` (any ``train_fraction``, any number of seeds;
``transfer`` true for a student distilled on the unlabeled transfer set too), ``student_kd_sweep``
(distilled at other temperatures); any other role goes to an "other models" table.

A *configuration* is a group of records that differ only by training seed: same role, arch, size,
alpha, temperature (ignored when alpha is 0), train fraction, transfer flag and test set. Its figures are
the mean, sd and 95% t-interval over seeds (:mod:`asr_kd.decode.significance`). Two configurations are
compared seed by seed (the same seed gives both the same initialisation and data order):

    distilled_vs_hard         kd − hard (full data)
    gain_recovered            (kd − hard) / (ensemble − hard), per seed (docs/design.md)
    wer_relative_reduction    (hard − kd) / hard on WER
    ensemble_vs_mean_teacher  ensemble − teacher k over the teachers (n = number of teachers)
    gap_closed                (kd_f − hard_f) / (hard_full − hard_f) at the Table 5 fraction f (3%)
    transfer_vs_no_transfer   kd with the transfer set − kd without it

and the distilled and hard-label students by paired tests over the test utterances (errors summed
over their common seeds, and seed by seed): bootstrap, sign test, utterance matched pairs.

Files written (atomically):
    <exp_dir>/results.json            ``summarize``'s dict (docs/design.md)
    <exp_dir>/RESULTS.md              or ``output``: the tables (:mod:`asr_kd.decode.tables`)
    <exp_dir>/temperature_sweep.png   frame accuracy and WER against T (with >= 2 temperatures)
    <exp_dir>/data_size_curve.png     frame accuracy, WER and gain recovered against the fraction (>= 2)
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Callable

from asr_kd.decode.plots import plot_data_size_curve, plot_temperature_sweep
from asr_kd.decode.record import (
    KNOWN_ROLES,
    canonical_fraction,
    find_configurations,
    load_record,
    same_fraction,
)
from asr_kd.decode.scoring import read_utt_errors
from asr_kd.decode.significance import paired_difference, paired_ratio, paired_wer_tests, summarize_seeds
from asr_kd.decode.tables import render_markdown
from asr_kd.utils import write_json, write_text

#: the two figures of merit (fractions); the gain formulas apply to both
METRICS = ("frame_acc", "wer")
#: the training fraction of the paper's Table 5
TABLE5_FRACTION = 0.03
#: bootstrap resamples of the paired WER tests
BOOTSTRAP_SAMPLES = 10_000
_SEED_SUFFIX = re.compile(r"-s\d+$")


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
        name="mean_teacher", role="mean_teacher", members=[t["name"] for t in teachers], seed=None, transfer=False,
        num_frames=teachers[0]["num_frames"], num_words=teachers[0]["num_words"], test_set=teachers[0]["test_set"],
    )  # fmt: skip
    return record


# ------------------------------------------------------------------------------------------- configurations
def fraction_of(record: dict) -> float:
    """The record's training fraction (None, the whole training set, is 1.0), as the configurations are
    keyed by it (``canonical_fraction``: float noise removed)."""
    return canonical_fraction(record.get("train_fraction"))


def config_key(record: dict) -> tuple:
    """What a configuration's records share: everything but the training seed (and T when alpha is 0)."""
    alpha = record.get("alpha")
    temperature = None if not alpha else record.get("temperature")
    return (record["role"], str(record.get("arch")), str(record.get("size")), alpha, temperature,
            fraction_of(record), bool(record.get("transfer")), record["test_set"])  # fmt: skip


def group_configurations(records: list[dict]) -> list[dict]:
    """The configurations of the student records (every role but teacher and ensemble), in order of their
    first record's name. Each: ``{"name" (the records' common name less ``-s<seed>``), "role", "arch",
    "size", "params", "alpha", "temperature", "train_fraction", "transfer", "test_set", "seeds",
    "members" (record names), "frame_acc" and "wer" (``summarize_seeds``)}``."""
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["name"]):
        if r["role"] in ("teacher", "ensemble", "mean_teacher"):
            continue
        groups.setdefault(config_key(r), []).append(r)
    out = []
    for key, members in groups.items():
        seen: dict = {}
        for r in members:
            if r.get("seed") in seen:
                logging.warning(f"{r['name']!r} and {seen[r['seed']]!r} are one configuration with the same seed "
                                f"{r['seed']}: the statistics count both")  # fmt: skip
            seen.setdefault(r.get("seed"), r["name"])
        names = {_SEED_SUFFIX.sub("", r["name"]) for r in members}
        role, arch, size, alpha, temperature, fraction, transfer, test_set = key
        out.append({
            "name": sorted(names)[0] if len(names) == 1 else " / ".join(sorted(names)),
            "role": role, "arch": members[0].get("arch"), "size": members[0].get("size"),
            "params": members[0]["params"], "alpha": alpha, "temperature": temperature, "train_fraction": fraction,
            "transfer": transfer, "test_set": test_set, "seeds": [r.get("seed") for r in members],
            "members": [r["name"] for r in members],
            **{m: summarize_seeds([r[m] for r in members]) for m in METRICS},
        })  # fmt: skip
    return out


def _by_seed(records: list[dict], metric: str) -> dict:
    """``seed -> value`` of a configuration's records (the first record of a repeated seed)."""
    out: dict = {}
    for r in records:
        out.setdefault(r.get("seed"), r[metric])
    return out


def _combine(a: dict, b: dict, fn: Callable[[float, float], float]) -> dict:
    return {s: fn(a[s], b[s]) for s in a if s in b and a[s] is not None and b[s] is not None}


class _Selection:
    """The records of the configurations the report compares."""

    def __init__(self, records: list[dict], table5_fraction: float) -> None:
        self.records = records
        self.teachers = [r for r in records if r["role"] == "teacher"]
        ensembles = [r for r in records if r["role"] == "ensemble"]
        if len(ensembles) > 1:
            logging.warning(f"{len(ensembles)} records with role 'ensemble'; the tables use {ensembles[0]['name']!r}")
        self.ensemble = ensembles[0] if ensembles else None
        self.configs = group_configurations(records)
        self.table5_fraction = table5_fraction

    def members(self, config: dict | None) -> list[dict]:
        if config is None:
            return []
        names = set(config["members"])
        return [r for r in self.records if r["name"] in names]

    def config(self, role: str, fraction: float = 1.0, transfer: bool = False, warn: bool = True) -> dict | None:
        found = find_configurations(self.configs, role, fraction, transfer)
        if len(found) > 1 and warn:
            logging.warning(f"{len(found)} configurations with role {role!r}, fraction {fraction:g}, transfer "
                            f"{transfer}; the tables use {found[0]['name']!r}")  # fmt: skip
        return found[0] if found else None

    def fractions(self) -> list[float]:
        return sorted({c["train_fraction"] for c in self.configs if c["role"] in ("student_hard", "student_kd")
                       and not c["transfer"]})  # fmt: skip

    def values(self, config: dict | None, metric: str) -> dict:
        return _by_seed(self.members(config), metric)


def _comparison(label: str, a: dict | None, b: dict | None, per_metric: dict[str, dict]) -> dict:
    return {"label": label, "a": a["name"] if a else None, "b": b["name"] if b else None, **per_metric}


def _kd_vs_hard(sel: _Selection, kd: dict | None, hard: dict | None) -> dict[str, dict]:
    """The seed-paired figures of a distilled and a hard-label configuration at one fraction."""
    ens = sel.ensemble
    diff, gain = {}, {}
    for m in METRICS:
        k, h = sel.values(kd, m), sel.values(hard, m)
        diff[m] = paired_difference(k, h)
        e = None if ens is None else ens[m]
        gain[m] = paired_ratio(_combine(k, h, lambda x, y: x - y),
                               {} if e is None else {s: e - v for s, v in h.items() if v is not None})  # fmt: skip
    return {"difference": diff, "gain_recovered": gain}


def _comparisons(sel: _Selection) -> dict:
    hard, kd = sel.config("student_hard"), sel.config("student_kd")
    pair = _kd_vs_hard(sel, kd, hard)
    out = {
        "distilled_vs_hard": _comparison("distilled - hard labels", kd, hard, pair["difference"]),
        "gain_recovered": _comparison("gain recovered (kd - hard) / (ensemble - hard)", kd, hard,
                                      pair["gain_recovered"]),  # fmt: skip
    }
    h, k = sel.values(hard, "wer"), sel.values(kd, "wer")
    out["wer_relative_reduction"] = _comparison(
        "relative WER reduction (hard - kd) / hard", kd, hard,
        {"frame_acc": summarize_seeds([]) | {"seeds": []}, "wer": paired_ratio(_combine(h, k, lambda x, y: x - y), h)},
    )  # fmt: skip
    ens = sel.ensemble
    ens_vs_mean = {}
    for m in METRICS:
        values = [] if ens is None or ens[m] is None else [ens[m] - t[m] for t in sel.teachers if t[m] is not None]
        ens_vs_mean[m] = summarize_seeds(values) | {"seeds": [t["name"] for t in sel.teachers]}
    out["ensemble_vs_mean_teacher"] = {"label": "ensemble - mean teacher (n: teachers)",
                                       "a": ens["name"] if ens else None, "b": "mean_teacher", **ens_vs_mean}  # fmt: skip
    f = sel.table5_fraction
    hard_f, kd_f = sel.config("student_hard", f, warn=False), sel.config("student_kd", f, warn=False)
    gap = {}
    for m in METRICS:
        hf, kf, hfull = sel.values(hard_f, m), sel.values(kd_f, m), sel.values(hard, m)
        gap[m] = paired_ratio(_combine(kf, hf, lambda x, y: x - y), _combine(hfull, hf, lambda x, y: x - y))
    out["gap_closed"] = _comparison(f"gap closed at {100 * f:g}% of the data (kd_f - hard_f) / (hard_full - hard_f)",
                                    kd_f, hard_f, gap) | {"fraction": f}  # fmt: skip
    transfer = sel.config("student_kd", transfer=True)
    out["transfer_vs_no_transfer"] = _comparison(
        "distilled with - without the transfer set", transfer, kd,
        {m: paired_difference(sel.values(transfer, m), sel.values(kd, m)) for m in METRICS},
    )  # fmt: skip
    return out


def _data_size_curve(sel: _Selection) -> list[dict]:
    rows = []
    for f in sel.fractions():
        hard, kd = sel.config("student_hard", f, warn=False), sel.config("student_kd", f, warn=False)
        pair = _kd_vs_hard(sel, kd, hard)
        rows.append({
            "train_fraction": f,
            "hard": None if hard is None else {k: hard[k] for k in ("name", "seeds", *METRICS)},
            "kd": None if kd is None else {k: kd[k] for k in ("name", "seeds", *METRICS)},
            "kd_minus_hard": pair["difference"], "gain_recovered": pair["gain_recovered"],
        })  # fmt: skip
    return rows


def _temperature_sweep(sel: _Selection) -> list[dict]:
    """Distilled students on the full data without transfer, one point per temperature (all seeds)."""
    points: dict[float, list[dict]] = {}
    for c in sel.configs:
        full_data = same_fraction(c["train_fraction"], 1.0) and not c["transfer"]
        if c["role"] in ("student_kd", "student_kd_sweep") and full_data:
            if c["temperature"] is None:
                logging.warning(f"{c['name']!r} ({c['role']}) has no temperature: left out of the sweep")
                continue
            points.setdefault(float(c["temperature"]), []).append(c)
    out = []
    for t in sorted(points):
        cs = points[t]
        if len(cs) > 1:
            logging.warning(f"{len(cs)} configurations at T={t:g} in the sweep; it shows {cs[0]['name']!r}")
        c = cs[0]
        out.append({"temperature": t, "name": c["name"], "role": c["role"], "alpha": c["alpha"], "seeds": c["seeds"],
                    **{m: c[m] for m in METRICS}})  # fmt: skip
    return out


def _table5(sel: _Selection, comparisons: dict) -> dict:
    """Hard vs soft targets on the Table 5 fraction and on the full data (the paper's Table 5)."""
    f = sel.table5_fraction
    rows = []
    for role, fraction, targets in (("student_hard", f, "hard"), ("student_kd", f, "soft"),
                                    ("student_hard", 1.0, "hard"), ("student_kd", 1.0, "soft")):  # fmt: skip
        c = sel.config(role, fraction, warn=False)
        if c is not None:
            rows.append({"name": c["name"], "role": role, "targets": targets, "train_fraction": fraction,
                         "seeds": c["seeds"], **{m: c[m] for m in METRICS}})  # fmt: skip
    gap = comparisons["gap_closed"]
    return {"fraction": f, "rows": rows if any(same_fraction(r["train_fraction"], f) for r in rows) else [],
            "gap_recovered": {m: gap[m] for m in METRICS}}  # fmt: skip


# ------------------------------------------------------------------------------------------- WER tests
def _pooled_errors(decode_dir: Path, records: list[dict]) -> dict[str, dict[str, tuple[int, int]]]:
    """``seed -> utt -> (ref words, errors)`` of a configuration's records (those with an utt-errors file)."""
    out = {}
    for r in records:
        path = decode_dir / f"utt-errors-{r['name']}.tsv"
        if not path.is_file():
            logging.warning(f"{path} does not exist: {r['name']!r} is left out of the paired WER tests "
                            "(decode it again to write it)")  # fmt: skip
            continue
        out.setdefault(r.get("seed"), read_utt_errors(path))
    return out


def _wer_test(decode_dir: Path | None, sel: _Selection, a: dict | None, b: dict | None, samples: int) -> dict | None:
    """Paired tests of configuration ``a`` against ``b``: pooled over common seeds, and per seed."""
    if decode_dir is None or a is None or b is None:
        return None
    ea, eb = _pooled_errors(decode_dir, sel.members(a)), _pooled_errors(decode_dir, sel.members(b))
    seeds = [s for s in ea if s in eb]
    if not seeds:
        return None
    utts = sorted(set.intersection(*(set(ea[s]) & set(eb[s]) for s in seeds)))
    dropped = max(len(ea[s]) for s in seeds) - len(utts)
    if dropped:
        logging.warning(f"paired WER test {a['name']} vs {b['name']}: {dropped} utterances not decoded by both "
                        "are left out")  # fmt: skip
    if not utts:
        return None

    def test(seed_list: list) -> dict:
        words = [sum(ea[s][u][0] for s in seed_list) for u in utts]
        err_a = [sum(ea[s][u][1] for s in seed_list) for u in utts]
        err_b = [sum(eb[s][u][1] for s in seed_list) for u in utts]
        return paired_wer_tests(err_a, err_b, words, num_samples=samples, seed=0) | {"seeds": list(seed_list)}

    return {"a": a["name"], "b": b["name"], "num_utts": len(utts), "pooled": test(seeds),
            "per_seed": [test([s]) for s in seeds] if len(seeds) > 1 else []}  # fmt: skip


# ------------------------------------------------------------------------------------------- summary
def summarize(records: list[dict], config: dict | None = None, decode_dir: Path | str | None = None,
              table5_fraction: float = TABLE5_FRACTION, bootstrap_samples: int = BOOTSTRAP_SAMPLES) -> dict:  # fmt: skip
    """The results schema from the decode records (module docstring; fractions, not %, throughout).

    Returns ``{"test_set", "num_frames", "num_words", "config", "models" (every record + mean_teacher),
    "configurations", "comparisons", "wer_tests", "gain_recovered" and "ensemble_gain" (means, per
    metric), "table5", "data_size_curve", "temperature_sweep"}``. ``decode_dir`` holds the utt-errors
    files of the paired WER tests (None: no tests).
    """
    sel = _Selection(records, table5_fraction)
    for role in ("teacher", "ensemble", "student_hard", "student_kd"):
        if not any(r["role"] == role for r in records):
            logging.warning(f"no decode record with role {role!r}: its rows are left out of the report")
    models = sorted((r for r in records if r["role"] in KNOWN_ROLES),
                    key=lambda r: (KNOWN_ROLES.index(r["role"]), fraction_of(r), r["name"]))  # fmt: skip
    if sel.teachers:
        models.insert(len(sel.teachers), mean_teacher(sel.teachers))
    models += sorted((r for r in records if r["role"] not in KNOWN_ROLES), key=lambda r: r["name"])
    test_sets = sorted({r["test_set"] for r in records})
    if len(test_sets) > 1:
        logging.warning(f"the decode records are on different test sets: {test_sets}")
    comparisons = _comparisons(sel)
    decode_dir = Path(decode_dir) if decode_dir is not None else None
    hard, kd = sel.config("student_hard", warn=False), sel.config("student_kd", warn=False)
    hard_f = sel.config("student_hard", table5_fraction, warn=False)
    kd_f = sel.config("student_kd", table5_fraction, warn=False)
    wer_tests = {
        "distilled_vs_hard": _wer_test(decode_dir, sel, kd, hard, bootstrap_samples),
        "distilled_vs_hard_table5": _wer_test(decode_dir, sel, kd_f, hard_f, bootstrap_samples),
    }
    reference = sel.ensemble or (sel.teachers[0] if sel.teachers else records[0])
    mean_of = lambda name: {m: comparisons[name][m]["mean"] for m in METRICS}  # noqa: E731
    return {
        "test_set": ", ".join(test_sets),
        "num_frames": reference["num_frames"],
        "num_words": reference["num_words"],
        "config": config or {},
        "models": models,
        "configurations": sel.configs,
        "comparisons": comparisons,
        "wer_tests": wer_tests,
        "gain_recovered": mean_of("gain_recovered"),
        "ensemble_gain": mean_of("ensemble_vs_mean_teacher"),
        "table5": _table5(sel, comparisons),
        "data_size_curve": _data_size_curve(sel),
        "temperature_sweep": _temperature_sweep(sel),
    }


# ------------------------------------------------------------------------------------------- entry
def make_report(exp_dir: Path | str, decode_dir: Path | str | None = None, output: Path | str | None = None,
                plot: bool = True, table5_fraction: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Read the decode records, write results.json, the markdown report and the plots.

    Args:
        exp_dir: ``exp/<recipe>``; ``<exp_dir>/recipe_config.json`` (if present) becomes ``config``.
        decode_dir: where the ``result-*.json`` records are; default ``<exp_dir>/decode``.
        output: the markdown file; default ``<exp_dir>/RESULTS.md``.
        plot: write ``temperature_sweep.png`` and ``data_size_curve.png`` into ``exp_dir`` (when they
            have >= 2 points).
        table5_fraction: the reduced training fraction of Table 5; default the config's
            ``table5_fraction``, else 0.03.

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
    if table5_fraction is None:
        value = config.get("table5_fraction", TABLE5_FRACTION)
        if not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"{config_path}: `table5_fraction` must be a fraction in (0, 1), got {value!r}")
        table5_fraction = float(value)
    results = summarize(records, config, decode_dir=decode_dir, table5_fraction=table5_fraction)
    write_json(exp_dir / "results.json", results)
    markdown = render_markdown(results, title=f"{exp_dir.name}: results")
    output = Path(output) if output is not None else exp_dir / "RESULTS.md"
    write_text(output, markdown)
    logging.info(f"{len(records)} decode records from {decode_dir}: wrote {exp_dir / 'results.json'}, {output}")
    if plot:
        plot_temperature_sweep(results, exp_dir / "temperature_sweep.png")
        plot_data_size_curve(results, exp_dir / "data_size_curve.png")
    return {**results, "markdown": markdown}
