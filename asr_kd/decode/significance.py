"""Statistics of the report: seed means with t-intervals, seed-paired differences, paired WER tests.

Usage::

    from asr_kd.decode.significance import (paired_bootstrap_wer, paired_difference, sign_test,
                                            summarize_seeds, utterance_matched_pairs)
    summarize_seeds([0.51, 0.52, 0.50])             # {"mean", "sd", "n", "ci95": [lo, hi], "values"}
    paired_difference({7: 0.55, 8: 0.56}, {7: 0.52, 8: 0.52})   # a - b per common seed, summarized
    paired_bootstrap_wer(errors_a, errors_b, ref_words)         # per-utterance error counts, same order

Seed statistics (a run is one draw of the training randomness): the mean, the sample standard deviation
(``ddof=1``) and the two-sided 95% Student-t interval ``mean ± t_{0.975, n-1} · sd / sqrt(n)``; with one
value, ``sd`` and the interval are None. A paired difference pairs two configurations by training seed
(the same seed gives both students the same initialisation and data order), so the interval is the
t-interval of the per-seed differences.

Paired WER tests compare two systems decoded on the same test utterances from their per-utterance error
counts (``utt-errors-<name>.tsv``, :mod:`asr_kd.decode.scoring`):

- the paired bootstrap of Bisani & Ney (2004): resample utterances with replacement, recompute
  ``ΔWER = WER(a) − WER(b)``; the 95% interval is the 2.5 / 97.5 percentiles and the two-sided p-value
  ``(1 + #{|Δ* − Δ| >= |Δ|}) / (1 + B)`` (the resampled differences shifted to the null of no difference);
- the sign test over utterances whose error counts differ (exact binomial, two-sided);
- the matched-pairs test of NIST's MAPSSWE with utterances as segments: ``z = mean(d) / (sd(d) / sqrt(n))``
  of the per-utterance error differences ``d``, normal two-sided p-value.

Identical systems give p = 1 in all three.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence

import numpy as np

#: confidence level of every interval in the report
CONFIDENCE = 0.95


def summarize_seeds(values: Sequence[float | None]) -> dict:
    """Mean, sample sd, n and 95% t-interval of the values (None values are left out).

    Returns ``{"mean", "sd", "n", "ci95": [low, high], "values"}``; ``mean`` None without values, ``sd``
    and ``ci95`` None with fewer than 2.
    """
    from scipy import stats

    vals = [float(v) for v in values if v is not None]
    n = len(vals)
    out: dict = {"mean": None, "sd": None, "n": n, "ci95": None, "values": vals}
    if n == 0:
        return out
    mean = float(np.mean(vals))
    out["mean"] = mean
    if n >= 2:
        sd = float(np.std(vals, ddof=1))
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
        out.update(sd=sd, ci95=[mean - half, mean + half])
    return out


def paired_difference(a: Mapping[Hashable, float | None], b: Mapping[Hashable, float | None]) -> dict:
    """``a[s] − b[s]`` over the seeds ``s`` both have (with values), summarized (``summarize_seeds``)
    plus ``"seeds"``: the paired seeds, sorted."""
    seeds = sorted((s for s in a if s in b and a[s] is not None and b[s] is not None), key=_sort_key)
    out = summarize_seeds([a[s] - b[s] for s in seeds])
    out["seeds"] = list(seeds)
    return out


def paired_ratio(numerator: Mapping[Hashable, float | None], denominator: Mapping[Hashable, float | None]) -> dict:
    """``numerator[s] / denominator[s]`` over common seeds with a non-zero denominator, summarized, plus
    ``"ratio_of_means"`` (mean numerator / mean denominator over those seeds).

    A share such as gain recovered, ``(kd - hard) / (ensemble - hard)``, means nothing for a seed whose
    denominator has the other sign (its hard-label student beat the ensemble): when the denominators do
    not all share one sign, ``"denominator_sign_changes"`` is True and ``mean``, ``sd`` and ``ci95`` are
    None (the per-seed ``values`` are kept), so no table shows a mean of ratios that flip sign.
    """
    seeds = sorted((s for s in numerator if s in denominator and numerator[s] is not None
                    and denominator[s] not in (None, 0)), key=_sort_key)  # fmt: skip
    out = summarize_seeds([numerator[s] / denominator[s] for s in seeds])
    out["seeds"] = list(seeds)
    dens = [denominator[s] for s in seeds]
    out["denominator_sign_changes"] = bool(dens) and min(dens) < 0 < max(dens)
    mean_den = sum(dens) / len(dens) if dens else 0.0
    out["ratio_of_means"] = (sum(numerator[s] for s in seeds) / len(seeds)) / mean_den if mean_den else None
    if out["denominator_sign_changes"]:
        out.update(mean=None, sd=None, ci95=None)
    return out


def _sort_key(seed: Hashable) -> tuple:
    return (str(type(seed)), seed) if isinstance(seed, (int, float, str)) else (str(type(seed)), str(seed))


def _check_pairs(errors_a: Sequence[float], errors_b: Sequence[float], ref_words: Sequence[float] | None = None):
    a, b = np.asarray(errors_a, dtype=np.float64), np.asarray(errors_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired tests need one error count per utterance for both systems, got shapes "
                         f"{a.shape} and {b.shape}")  # fmt: skip
    if ref_words is None:
        return a, b, None
    r = np.asarray(ref_words, dtype=np.float64)
    if r.shape != a.shape:
        raise ValueError(f"ref_words has shape {r.shape}, the error counts {a.shape}")
    return a, b, r


def paired_bootstrap_wer(errors_a: Sequence[float], errors_b: Sequence[float], ref_words: Sequence[float],
                         num_samples: int = 10_000, seed: int = 0) -> dict:  # fmt: skip
    """Paired bootstrap over utterances of ``ΔWER = WER(a) − WER(b)`` (module docstring).

    Args:
        errors_a, errors_b: per utterance (same order) the word errors (S + I + D) of each system.
        ref_words: per utterance the reference word count.
        num_samples: bootstrap resamples B.
        seed: of the resampling (the result depends only on it and the inputs).

    Returns:
        ``{"delta", "ci95": [low, high], "p_value", "prob_a_better" (share of resamples with ΔWER < 0),
        "num_utts", "num_samples"}``, WERs as fractions.
    """
    a, b, r = _check_pairs(errors_a, errors_b, ref_words)
    n = a.shape[0]
    if n == 0 or r.sum() <= 0:
        raise ValueError("the paired bootstrap needs utterances with reference words")
    delta = float((a.sum() - b.sum()) / r.sum())
    rng = np.random.default_rng(seed)
    d = a - b
    deltas = np.empty(num_samples)
    for start in range(0, num_samples, 1000):  # chunks bound the (chunk, n) index matrix
        idx = rng.integers(0, n, size=(min(1000, num_samples - start), n))
        deltas[start : start + idx.shape[0]] = d[idx].sum(axis=1) / np.maximum(r[idx].sum(axis=1), 1e-12)
    extreme = int(np.sum(np.abs(deltas - delta) >= abs(delta) - 1e-12))
    low, high = np.percentile(deltas, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return {"delta": delta, "ci95": [float(low), float(high)], "p_value": (1 + extreme) / (1 + num_samples),
            "prob_a_better": float(np.mean(deltas < 0)), "num_utts": int(n), "num_samples": int(num_samples)}  # fmt: skip


def sign_test(errors_a: Sequence[float], errors_b: Sequence[float]) -> dict:
    """Two-sided exact sign test over utterances whose error counts differ.

    Returns ``{"a_better", "b_better", "ties", "p_value"}`` (p = 1 when no utterance differs).
    """
    from scipy import stats

    a, b, _ = _check_pairs(errors_a, errors_b)
    a_better, b_better = int(np.sum(a < b)), int(np.sum(a > b))
    ties = int(a.shape[0] - a_better - b_better)
    p = 1.0 if a_better + b_better == 0 else float(stats.binomtest(a_better, a_better + b_better, 0.5).pvalue)
    return {"a_better": a_better, "b_better": b_better, "ties": ties, "p_value": p}


def utterance_matched_pairs(errors_a: Sequence[float], errors_b: Sequence[float]) -> dict:
    """MAPSSWE-style matched-pairs test with utterances as segments (module docstring).

    Returns ``{"mean_difference" (errors per utterance, a − b), "z", "p_value", "num_utts"}``; p = 1 when
    every difference is 0.
    """
    from scipy import stats

    a, b, _ = _check_pairs(errors_a, errors_b)
    d = a - b
    n = d.shape[0]
    mean = float(d.mean()) if n else 0.0
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if sd == 0.0:  # every utterance differs by the same amount: no difference, or a certain one
        z, p = (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    else:
        z = mean / (sd / math.sqrt(n))
        p = float(2 * stats.norm.sf(abs(z)))
    return {"mean_difference": mean, "z": z, "p_value": p, "num_utts": int(n)}


def paired_wer_tests(errors_a: Sequence[float], errors_b: Sequence[float], ref_words: Sequence[float],
                     num_samples: int = 10_000, seed: int = 0) -> dict:  # fmt: skip
    """The three paired tests of ``a`` against ``b`` on the same utterances:
    ``{"bootstrap", "sign", "matched_pairs", "wer_a", "wer_b"}``."""
    a, b, r = _check_pairs(errors_a, errors_b, ref_words)
    return {
        "wer_a": float(a.sum() / r.sum()) if r.sum() else None,
        "wer_b": float(b.sum() / r.sum()) if r.sum() else None,
        "bootstrap": paired_bootstrap_wer(a, b, r, num_samples=num_samples, seed=seed),
        "sign": sign_test(a, b),
        "matched_pairs": utterance_matched_pairs(a, b),
    }
