"""The report's markdown: Table 1, Table 5, the temperature sweep, other models, decoding speed.

``render_markdown(results)`` renders what :func:`asr_kd.decode.report.summarize` returns.
"""

from __future__ import annotations

from asr_kd.decode.record import KNOWN_ROLES


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
