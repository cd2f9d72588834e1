import math

import numpy as np
import pytest

from asr_kd.decode.significance import (
    paired_bootstrap_wer,
    paired_difference,
    paired_ratio,
    paired_wer_tests,
    sign_test,
    summarize_seeds,
    utterance_matched_pairs,
)


def test_t_interval_by_hand():
    # mean 2, sd = sqrt(((1)^2 + 0 + 1^2) / 2) = 1, t_{0.975, 2} = 4.302653, half width 4.302653 / sqrt(3)
    s = summarize_seeds([1.0, 2.0, 3.0])
    assert s["mean"] == pytest.approx(2.0) and s["sd"] == pytest.approx(1.0) and s["n"] == 3
    half = 4.302653 / math.sqrt(3)
    assert s["ci95"] == pytest.approx([2.0 - half, 2.0 + half], abs=1e-5)
    # two values: t_{0.975, 1} = 12.7062; sd = sqrt(2) * 0.05
    s = summarize_seeds([0.50, 0.60])
    assert s["ci95"][1] - s["mean"] == pytest.approx(12.7062 * (0.1 / math.sqrt(2)) / math.sqrt(2), rel=1e-4)


def test_summary_of_one_or_no_value():
    assert summarize_seeds([0.4]) == {"mean": 0.4, "sd": None, "n": 1, "ci95": None, "values": [0.4]}
    assert summarize_seeds([None])["mean"] is None and summarize_seeds([])["n"] == 0


def test_paired_difference_pairs_by_seed():
    kd = {7: 0.55, 8: 0.57, 9: 0.56, 10: 0.9}
    hard = {9: 0.52, 7: 0.50, 8: 0.53, 11: 0.1}
    d = paired_difference(kd, hard)
    assert d["seeds"] == [7, 8, 9] and d["values"] == pytest.approx([0.05, 0.04, 0.04])
    assert d["mean"] == pytest.approx(0.13 / 3)
    assert d["ci95"][0] > 0  # a consistent gain over seeds excludes 0
    r = paired_ratio({1: 2.0, 2: 3.0, 3: 1.0}, {1: 4.0, 2: 0.0, 3: 2.0})
    assert r["seeds"] == [1, 3] and r["values"] == pytest.approx([0.5, 0.5])
    assert r["ratio_of_means"] == pytest.approx(1.5 / 3.0) and not r["denominator_sign_changes"]


def test_a_ratio_whose_denominator_changes_sign_has_no_mean():
    """Gain recovered of a seed whose hard-label student beat the ensemble (denominator < 0) flips sign:
    (0.2 / 0.4, -0.1 / -0.2) are both 0.5 but mean opposite things, so no mean or interval is given."""
    r = paired_ratio({7: 0.2, 8: -0.1}, {7: 0.4, 8: -0.2})
    assert r["denominator_sign_changes"] and r["mean"] is None and r["ci95"] is None
    assert r["values"] == pytest.approx([0.5, 0.5]) and r["n"] == 2
    assert r["ratio_of_means"] == pytest.approx(0.05 / 0.1)


def test_identical_systems_give_p_one():
    rng = np.random.default_rng(0)
    errors = rng.integers(0, 4, size=300)
    words = rng.integers(3, 12, size=300)
    tests = paired_wer_tests(errors, errors, words, num_samples=2000)
    assert tests["bootstrap"]["delta"] == 0.0 and tests["bootstrap"]["p_value"] == pytest.approx(1.0)
    assert tests["bootstrap"]["ci95"] == [0.0, 0.0]
    assert tests["sign"] == {"a_better": 0, "b_better": 0, "ties": 300, "p_value": 1.0}
    assert tests["matched_pairs"]["p_value"] == 1.0


def test_a_clear_win_gives_small_p():
    rng = np.random.default_rng(1)
    words = rng.integers(5, 15, size=400)
    b = rng.binomial(words, 0.20)  # system b: ~20% WER
    a = rng.binomial(words, 0.10)  # system a: ~10% WER on the same utterances
    tests = paired_wer_tests(a, b, words, num_samples=5000)
    boot = tests["bootstrap"]
    assert boot["delta"] == pytest.approx((a.sum() - b.sum()) / words.sum())
    assert boot["p_value"] < 0.01 and boot["ci95"][1] < 0 and boot["prob_a_better"] > 0.99
    assert tests["sign"]["p_value"] < 0.01 and tests["sign"]["a_better"] > tests["sign"]["b_better"]
    assert tests["matched_pairs"]["p_value"] < 0.01 and tests["matched_pairs"]["z"] < 0


def test_noise_is_not_significant():
    rng = np.random.default_rng(2)
    words = rng.integers(5, 15, size=200)
    a, b = rng.binomial(words, 0.15), rng.binomial(words, 0.15)
    assert paired_bootstrap_wer(a, b, words, num_samples=2000)["p_value"] > 0.01


def test_sign_test_and_matched_pairs_by_hand():
    # a better on 8 utterances, worse on 1, 1 tie: binomial P(X <= 1 or X >= 8 | 9, 0.5) = 2 * 10 / 512
    a = [0, 0, 0, 0, 0, 0, 0, 0, 2, 1]
    b = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    s = sign_test(a, b)
    assert (s["a_better"], s["b_better"], s["ties"]) == (8, 1, 1)
    assert s["p_value"] == pytest.approx(20 / 512)
    m = utterance_matched_pairs(a, b)
    d = np.array(a) - np.array(b)
    assert m["z"] == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(10)))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="one error count per utterance"):
        sign_test([1, 2], [1])
    with pytest.raises(ValueError, match="ref_words"):
        paired_bootstrap_wer([1, 2], [1, 2], [3])
