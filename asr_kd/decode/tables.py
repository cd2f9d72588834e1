"""The report's markdown: Table 1, the seed-paired comparisons, the paired WER tests, the data-size
curve, Table 5, the temperature sweep, other models, decoding speed.

``render_markdown(results)`` renders what :func:`asr_kd.decode.report.summarize` returns. Figures of a
configuration are ``mean ± sd`` over its seeds (``n`` seeds); a difference is shown with its 95%
t-interval over seeds.
"""

from __future__ import annotations

from asr_kd.decode.record import KNOWN_ROLES, find_configurations


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _count(x: float | None) -> str:
    return "n/a" if x is None else (f"{x:d}" if isinstance(x, int) else f"{x:.1f}")


def _ms(summary: dict | None, digits: int = 2) -> str:
    """``mean ± sd`` in % of a seed summary (``mean`` alone with one seed)."""
    if not summary or summary.get("mean") is None:
        return "n/a"
    if summary.get("sd") is None:
        return _pct(summary["mean"], digits)
    return f"{_pct(summary['mean'], digits)} ± {_pct(summary['sd'], digits)}"


def _ci(summary: dict | None, signed: bool = True, digits: int = 2) -> str:
    """``[low, high]`` in % (points or shares) of a summary's 95% interval."""
    if not summary or not summary.get("ci95"):
        return "n/a"
    fmt = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    return "[" + ", ".join(fmt.format(100 * x) for x in summary["ci95"]) + "]"


def _signed(summary: dict | None, digits: int = 2) -> str:
    if not summary or summary.get("mean") is None:
        return "n/a"
    return f"{100 * summary['mean']:+.{digits}f}"


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


def _config_label(c: dict) -> str:
    t = c.get("temperature")
    if c["role"] == "student_hard":
        return f"student, hard labels ({c['name']})"
    if c["role"] in ("student_kd", "student_kd_sweep"):
        what = "distilled + transfer set" if c.get("transfer") else "distilled"
        return f"student, {what}{f' T={t:g}' if t is not None else ''} ({c['name']})"
    return f"{c['name']} ({c['role']})" if c["role"] else c["name"]


def _record_row(r: dict, smallest: float | None, label: str) -> str:
    arch = "n/a" if r["role"] == "mean_teacher" else _arch(r)
    return (f"| {label} | {arch} | {_params(r['params'])} | {_size_ratio(smallest, r['params'])} | 1 "
            f"| {_pct(r['frame_acc'])} | {_wer_cell(r)} |")


def _config_row(c: dict, smallest: float | None) -> str:
    return (f"| {_config_label(c)} | {_arch(c)} | {_params(c['params'])} | {_size_ratio(smallest, c['params'])} "
            f"| {c['frame_acc']['n'] or c['wer']['n']} | {_ms(c['frame_acc'])} | {_ms(c['wer'])} |")


_TABLE_HEAD = [
    "| model | arch / size | params | size vs smallest teacher | seeds | frame acc % | WER % (S/I/D) |",
    "|---|---|---|---|---|---|---|",
]


def _full_data(configs: list[dict], role: str, transfer: bool = False) -> dict | None:
    return next(iter(find_configurations(configs, role, 1.0, transfer)), None)


def render_markdown(results: dict, title: str = "results") -> str:
    """The report's markdown (module docstring)."""
    models, configs = results["models"], results["configurations"]
    teachers = [r for r in models if r["role"] == "teacher"]
    smallest = min((t["params"] for t in teachers), default=None)
    out = [
        f"# {title}", "",
        f"Test set `{results['test_set']}`: {results['num_frames']} frames, {results['num_words']} words. "
        "Frame accuracy and WER in %; S/I/D: substitutions / insertions / deletions; students: mean ± sd "
        "over their seeds.", "",
    ]  # fmt: skip
    out += _skipped_lines(models)
    out += ["## Table 1: ensemble and distilled student", ""]
    rows = [_record_row(r, smallest, r["name"]) for r in teachers]
    mean = next((r for r in models if r["role"] == "mean_teacher"), None)
    if mean is not None:
        rows.append(_record_row(mean, smallest, f"mean of {len(mean['members'])} teachers"))
    rows += [_record_row(r, smallest, f"ensemble of {len(r['models'])} teachers") for r in models
             if r["role"] == "ensemble"][:1]  # fmt: skip
    rows += [_config_row(c, smallest) for c in (_full_data(configs, "student_hard"), _full_data(configs, "student_kd"),
                                                _full_data(configs, "student_kd", transfer=True)) if c]  # fmt: skip
    out += (_TABLE_HEAD + rows) if rows else ["No teacher, ensemble or student records."]
    out.append("")
    out.append("Paper (Hinton et al. 2015, Table 1): 58.9% / 61.1% / 60.8% frame accuracy and 10.9% / 10.7% / "
               "10.7% WER for baseline / 10x ensemble / distilled: 86% of the frame-accuracy gain recovered.")
    out += _ladder_lines(models)
    out += _comparison_lines(results["comparisons"])
    out += _wer_test_lines(results["wer_tests"])
    out += _curve_lines(results["data_size_curve"])
    out += _table5_lines(results["table5"])
    out += _sweep_lines(results["temperature_sweep"], _full_data(configs, "student_hard"))
    others = [r for r in models if r["role"] not in KNOWN_ROLES]
    if others:
        out += ["", "## Other models", ""] + _TABLE_HEAD + [_record_row(r, smallest, _other_label(r)) for r in others]
    scales = [f"{r['name']} {r['decode_config']['tuning']['best']:g}" for r in models if _tuned(r)]
    if scales:
        out += ["", "Acoustic scale of each model, tuned on the development cuts: " + ", ".join(scales) + "."]
    fixed = [r for r in models if isinstance(r.get("decode_config"), dict) and not _tuned(r)
             and isinstance(r["decode_config"].get("acoustic_scale"), (int, float))]  # fmt: skip
    if fixed:
        out += ["", "Decoded at a given acoustic scale (not tuned): "
                + ", ".join(f"{r['name']} {r['decode_config']['acoustic_scale']:g}" for r in fixed) + "."]  # fmt: skip
    searched = [r for r in models if isinstance(r.get("num_no_final"), int)]
    if searched:
        beams = {bool(r["decode_config"].get("scale_beam", True)) for r in searched
                 if isinstance(r.get("decode_config"), dict)}  # fmt: skip
        beam = {frozenset({True}): "the beam grows with the acoustic scale above 0.1",
                frozenset({False}): "a fixed beam at every acoustic scale"}.get(frozenset(beams), "fixed and scaled beams")
        out += ["", f"Search ({beam}; an utterance without a final state is "
                "searched again with the beam doubled): utterances that still ended without a final state / "
                "retries: " + ", ".join(f"{r['name']} {r['num_no_final']}/{r['num_retries']}" for r in searched)
                + "."]  # fmt: skip
    speeds = [f"{r['name']} {r['rtf']:.4f}" for r in models if r.get("rtf") is not None]
    if speeds:
        out += ["", "## Decoding speed", "", "Real-time factor per CPU core of the search (search seconds x "
                "decoding processes / audio seconds; lower is faster): " + ", ".join(speeds) + "."]  # fmt: skip
    return "\n".join(out) + "\n"


def _skipped_lines(models: list[dict]) -> list[str]:
    """A warning paragraph naming every decoding that left cuts out (``num_skipped``), or nothing."""
    skipped = [r for r in models if r.get("num_skipped")]
    if not skipped:
        return []
    counts = ", ".join(f"{r['name']}: {r['num_skipped']} of {r['num_skipped'] + r['num_utts']} cuts skipped"
                       for r in skipped)  # fmt: skip
    return [f"**Skipped cuts.** {counts}. Their features or labels could not be read (a truncated archive, "
            "non-finite values: the reasons are in `skipped-<name>.txt` beside the decode records); the WER "
            "and frame accuracy of these decodings are on the remaining cuts only.", ""]


#: roles of the ladder table, in its order after the GMM systems
_LADDER_ROLES = ("teacher", "ensemble", "student_hard", "student_kd")


def _tuned(r: dict) -> bool:
    return isinstance(r.get("decode_config"), dict) and isinstance(r["decode_config"].get("tuning"), dict)


def _ladder_lines(models: list[dict]) -> list[str]:
    """Kaldi's RESULTS ladder: the GMM-HMM systems (role ``gmm``, by name: mono, tri1, tri2, ...), then the
    hybrid models, WER on the same test set and the same HCLG search."""
    gmms = sorted((r for r in models if r["role"] == "gmm"), key=lambda r: r["name"])
    if not gmms:
        return []
    hybrids = [r for role in _LADDER_ROLES for r in models if r["role"] == role]
    out = ["", "## System ladder: GMM-HMM systems, then hybrid models", "",
           "| system | kind | params | frame acc % | WER % (S/I/D) | no final state / retries |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for r in gmms + hybrids:
        kind = f"GMM-HMM ({r.get('size') or 'n/a'})" if r["role"] == "gmm" else f"hybrid, {r['role']}"
        search = f"{r.get('num_no_final', 'n/a')} / {r.get('num_retries', 'n/a')}"
        out.append(f"| {r['name']} | {kind} | {_params(r['params'])} | {_pct(r['frame_acc'])} | {_wer_cell(r)} "
                   f"| {search} |")  # fmt: skip
    out += ["", "A GMM system's frame accuracy is against the final alignment's pdf ids: it means something only for "
            "the pass that made them (another tree numbers its pdfs differently).",
            "", "Kaldi's RM anchor (egs/rm/s5/RESULTS): mono 8.74%, tri1 3.26%, tri2b 2.98%, DNN hybrids 1.5-2.0% WER."]
    return out


def _other_label(r: dict) -> str:
    return f"{r['name']} ({r['role']})" if r["role"] else r["name"]


def _comparison_lines(comparisons: dict) -> list[str]:
    out = ["", "## Differences that matter (95% confidence intervals)", "",
           "Seed-paired: each difference is taken between the two students of the same seed, then the mean "
           "and its t-interval over seeds; the ensemble against each teacher, over the teachers. Points of "
           "frame accuracy / WER, or shares in %.", "",
           "| comparison | frame acc | 95% CI | WER | 95% CI | n |", "|---|---|---|---|---|---|"]  # fmt: skip
    shares = ("gain_recovered", "wer_relative_reduction", "gap_closed")
    for key, c in comparisons.items():
        fa, w = c["frame_acc"], c["wer"]
        n = max(fa["n"], w["n"])
        if n == 0:
            continue
        unit = "%" if key in shares else ""
        cell = lambda s: "n/a" if s["mean"] is None else f"{_signed(s, 1 if unit else 2)}{unit}"  # noqa: E731
        out.append(f"| {c['label']} ({c['a']} vs {c['b']}) | {cell(fa)} | {_ci(fa, digits=1 if unit else 2)} "
                   f"| {cell(w)} | {_ci(w, digits=1 if unit else 2)} | {n} |")  # fmt: skip
    if len(out) == 7:
        out.append("| (no pair of configurations to compare) | | | | | |")
    return out


def _p(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.2g}" if x >= 1e-4 else "< 1e-4"


def _wer_test_lines(tests: dict) -> list[str]:
    present = {k: t for k, t in tests.items() if t}
    if not present:
        return []
    out = ["", "## Paired WER tests over the test utterances", "",
           "a vs b on the same utterances; pooled: each utterance's errors summed over the seeds both have. "
           "ΔWER = WER(a) − WER(b) in points; bootstrap: 95% interval and two-sided p of 10,000 resamples of "
           "the utterances; sign: exact sign test over the utterances whose error counts differ; matched "
           "pairs: MAPSSWE with utterances as segments.", "",
           "| a vs b | seeds | WER a % | WER b % | ΔWER | bootstrap 95% CI | p (bootstrap) | p (sign) "
           "| p (matched pairs) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in present.values():
        for label, r in [("pooled", t["pooled"])] + [(f"seed {x['seeds'][0]}", x) for x in t["per_seed"]]:
            b = r["bootstrap"]
            out.append(f"| {t['a']} vs {t['b']} | {label} ({len(r['seeds'])}) | {_pct(r['wer_a'])} | {_pct(r['wer_b'])} "
                       f"| {100 * b['delta']:+.2f} | [{100 * b['ci95'][0]:+.2f}, {100 * b['ci95'][1]:+.2f}] "
                       f"| {_p(b['p_value'])} | {_p(r['sign']['p_value'])} | {_p(r['matched_pairs']['p_value'])} |")  # fmt: skip
    return out


def _curve_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    out = ["", "## Data-size curve: students on a fraction of the labeled training data", "",
           "Same ensemble (trained on all the data) for every fraction; gain recovered (kd − hard) / "
           "(ensemble − hard) per seed, mean [95% CI].", "",
           "| % of data | seeds | hard frame acc | distilled frame acc | gain recovered (frame acc) | hard WER "
           "| distilled WER | gain recovered (WER) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        hard, kd, gain = row["hard"] or {}, row["kd"] or {}, row["gain_recovered"]
        seeds = max(len(hard.get("seeds", [])), len(kd.get("seeds", [])))
        out.append(f"| {100 * row['train_fraction']:g} | {seeds} | {_ms(hard.get('frame_acc'))} "
                   f"| {_ms(kd.get('frame_acc'))} | {_gain_cell(gain['frame_acc'])} | {_ms(hard.get('wer'))} "
                   f"| {_ms(kd.get('wer'))} | {_gain_cell(gain['wer'])} |")  # fmt: skip
    return out


def _gain_cell(s: dict) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{_share(s['mean'])} {_ci(s, signed=False, digits=1)}" if s.get("ci95") else _share(s["mean"])


def _table5_lines(table5: dict) -> list[str]:
    if not table5["rows"]:
        return []
    pct = f"{100 * table5['fraction']:g}"
    out = ["", f"## Table 5: soft targets on {pct}% of the training data", "",
           "| model | training targets | % of training data | seeds | frame acc % | WER % |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for row in table5["rows"]:
        out.append(f"| {row['name']} | {row['targets']} | {100 * row['train_fraction']:g} | {len(row['seeds'])} "
                   f"| {_ms(row['frame_acc'])} | {_ms(row['wer'])} |")  # fmt: skip
    gap = table5["gap_recovered"]
    out += ["", f"Soft targets on {pct}% of the data close {_gain_cell(gap['frame_acc'])} of the frame-accuracy gap "
            f"(and {_gain_cell(gap['wer'])} of the WER gap) between hard labels on {pct}% and on all the data. "
            "Paper (3% of the data): hard 44.5%, soft 57.0%, full data 58.9% frame accuracy (87% closed)."]  # fmt: skip
    return out


def _sweep_lines(sweep: list[dict], hard: dict | None) -> list[str]:
    if not sweep:
        return []
    out = ["", "## Temperature sweep (distilled students, all the data)", "",
           "| T | model | alpha | seeds | frame acc % | WER % |", "|---|---|---|---|---|---|"]  # fmt: skip
    for p in sweep:
        alpha = "n/a" if p["alpha"] is None else f"{p['alpha']:g}"
        out.append(f"| {p['temperature']:g} | {p['name']} | {alpha} | {len(p['seeds'])} | {_ms(p['frame_acc'])} "
                   f"| {_ms(p['wer'])} |")  # fmt: skip
    if hard is not None:
        out.append(f"| hard labels | {hard['name']} | 0 | {len(hard['seeds'])} | {_ms(hard['frame_acc'])} "
                   f"| {_ms(hard['wer'])} |")  # fmt: skip
    return out
