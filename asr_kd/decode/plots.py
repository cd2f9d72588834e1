"""The report's plots (matplotlib, PNG, written atomically): the temperature sweep and the data-size curve.

Both read what :func:`asr_kd.decode.report.summarize` returns; points are seed means with error bars of
one sample sd (none with a single seed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from asr_kd.decode.record import find_configurations
from asr_kd.utils import atomic_output


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_sd(summary: dict | None, scale: float = 100.0) -> tuple[float | None, float]:
    if not summary or summary.get("mean") is None:
        return None, 0.0
    return scale * summary["mean"], scale * (summary.get("sd") or 0.0)


def _save(fig, path: Path | str) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _pyplot().close(fig)
    logging.info(f"wrote {path}")
    return path


def _reference(results: dict, role: str) -> dict | None:
    """The full-data, no-transfer configuration of ``role`` (``student_hard``), or the ensemble record."""
    if role == "ensemble":
        return next((r for r in results["models"] if r["role"] == "ensemble"), None)
    return next(iter(find_configurations(results["configurations"], role)), None)


def plot_temperature_sweep(results: dict, path: Path | str) -> Path | None:
    """Frame accuracy and WER (%) against T, with the hard-label student and the ensemble as lines.

    Skipped (returns None) with fewer than 2 temperatures.
    """
    points = [p for p in results["temperature_sweep"] if any(p[k]["mean"] is not None for k in ("frame_acc", "wer"))]
    if len(points) < 2:
        logging.info(f"{len(points)} temperature-sweep point(s): no plot")
        return None
    plt = _pyplot()
    hard, ens = _reference(results, "student_hard"), _reference(results, "ensemble")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "frame_acc", "frame accuracy (%)"), (axes[1], "wer", "WER (%)")):
        xs, ys, es = [], [], []
        for p in points:
            y, e = _mean_sd(p[key])
            if y is not None:
                xs.append(p["temperature"]), ys.append(y), es.append(e)
        if xs:
            ax.errorbar(xs, ys, yerr=es, fmt="o-", capsize=3, label="distilled student (mean ± sd over seeds)")
        y, _ = _mean_sd(hard[key] if hard else None)
        if y is not None:
            ax.axhline(y, linestyle="--", color="red", label="hard-label student")
        if ens is not None and ens[key] is not None:
            ax.axhline(100 * ens[key], linestyle=":", color="gray", label="ensemble")
        ax.set_xlabel("temperature T")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", framealpha=0.6)
    fig.suptitle(f"Distillation temperature sweep ({results['test_set']})")
    fig.tight_layout()
    return _save(fig, path)


def plot_data_size_curve(results: dict, path: Path | str) -> Path | None:
    """Frame accuracy, WER (%) and gain recovered (%) of the hard-label and distilled students against
    the training fraction (log scale), the ensemble as a line. Skipped with fewer than 2 fractions."""
    rows = results["data_size_curve"]
    if len(rows) < 2:
        logging.info(f"{len(rows)} data-size point(s): no plot")
        return None
    plt = _pyplot()
    ens = _reference(results, "ensemble")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = (("frame_acc", "frame accuracy (%)"), ("wer", "WER (%)"))
    for ax, (key, label) in zip(axes[:2], panels):
        for which, style, name in (("hard", "s--", "hard labels"), ("kd", "o-", "distilled")):
            xs, ys, es = [], [], []
            for row in rows:
                y, e = _mean_sd(row[which][key] if row[which] else None)
                if y is not None:
                    xs.append(100 * row["train_fraction"]), ys.append(y), es.append(e)
            if xs:
                ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=name)
        if ens is not None and ens[key] is not None:
            ax.axhline(100 * ens[key], linestyle=":", color="gray", label="ensemble (all data)")
        ax.set_ylabel(label)
    ax = axes[2]
    for key, style, name in (("frame_acc", "o-", "frame accuracy"), ("wer", "s--", "WER")):
        xs, ys, es = [], [], []
        for row in rows:
            y, e = _mean_sd(row["gain_recovered"][key])
            if y is not None:
                xs.append(100 * row["train_fraction"]), ys.append(y), es.append(e)
        if xs:
            ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=name)
    ax.axhline(100, linestyle=":", color="gray", label="all of the ensemble's gain")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel("gain recovered (%)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training data (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", framealpha=0.6)
    fig.suptitle(f"Students against the amount of labeled training data ({results['test_set']})")
    fig.tight_layout()
    return _save(fig, path)
