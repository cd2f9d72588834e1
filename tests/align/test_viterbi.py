"""Tests of Viterbi forced alignment (asr_kd.align.viterbi) on the tiny lang of test_graph.py.

Log-likelihood matrices put a mild value on the pdf meant for each frame and -20 elsewhere, so the best
path is known by hand; its score is checked against hand-added transition costs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_graph import A0, A1, B0, B1, C0, C1, FORWARD, SELF_LOOP, SIL, SKIP_SIL, TAKE_SIL, lang, pdf_sequences

from asr_kd.align import align_batch, utterance_graph, viterbi_align
from asr_kd.data.lang import Lang

__all__ = ["lang"]  # the fixture, imported for pytest
OFF = -20.0  # log-likelihood of the pdfs a frame is not meant for


def favour(num_pdfs: int, frames: list[tuple[int, float]]) -> np.ndarray:
    """(T, num_pdfs) float32: ``OFF`` everywhere, ``loglike`` at ``pdf`` for each frame's (pdf, loglike)."""
    loglikes = np.full((len(frames), num_pdfs), OFF, dtype=np.float32)
    for t, (pdf, value) in enumerate(frames):
        loglikes[t, pdf] = value
    return loglikes


def test_known_best_path_and_score(lang: Lang) -> None:
    loglikes = favour(lang.num_pdfs, [(SIL, -0.5), (A0, -0.25), (A0, -0.75), (A1, -1.0)])
    ali = viterbi_align(utterance_graph(lang, ["a"]), loglikes)
    assert ali is not None and not ali.retried
    assert ali.pdf_ids.dtype == np.int32 and ali.pdf_ids.tolist() == [SIL, A0, A0, A1]
    sil, a = lang.phone_to_id["SIL"], lang.phone_to_id["A"]
    assert ali.phone_ids.dtype == np.int32 and ali.phone_ids.tolist() == [sil, a, a, a]
    assert ali.phones == [("SIL", 0, 1), ("A", 1, 3)]
    # take the silence, leave SIL; A: one self-loop on state 0, forward, leave; skip the final silence
    graph_cost = TAKE_SIL + FORWARD + SELF_LOOP + FORWARD + FORWARD + SKIP_SIL
    assert ali.log_likelihood == pytest.approx(-2.5, abs=1e-6)
    assert ali.graph_cost == pytest.approx(graph_cost, abs=1e-4)
    assert ali.score == pytest.approx(-2.5 - graph_cost, abs=1e-4)
    assert ali.num_frames == 4


def test_score_is_the_exhaustive_maximum(lang: Lang) -> None:
    graph = utterance_graph(lang, ["a", "b"])
    loglikes = np.log(np.random.default_rng(0).dirichlet(np.ones(lang.num_pdfs), size=7)).astype(np.float32)
    best = max((sum(loglikes[t, p] for t, p in enumerate(seq)) - cost, seq)
               for seq, cost in pdf_sequences(graph, 7).items())
    ali = viterbi_align(graph, loglikes, beam=1e4)
    assert ali is not None
    assert ali.score == pytest.approx(best[0], abs=1e-4)
    assert tuple(ali.pdf_ids.tolist()) == best[1]


@pytest.mark.parametrize("pdfs, phone", [((B0, B0, B1), "B"), ((C0, C1, C1), "C")])
def test_picks_the_pronunciation_the_loglikes_favour(lang: Lang, pdfs: tuple[int, ...], phone: str) -> None:
    ali = viterbi_align(utterance_graph(lang, ["b"]), favour(lang.num_pdfs, [(p, -1.0) for p in pdfs]))
    assert ali is not None
    assert ali.pdf_ids.tolist() == list(pdfs) and ali.phones == [(phone, 0, 3)]


@pytest.mark.parametrize("pdfs, phones, graph_cost", [
    # skip, A (forward, leave), take SIL, SIL (self-loop, leave), B (forward, leave), skip
    ((A0, A1, SIL, SIL, B0, B1), [("A", 0, 2), ("SIL", 2, 2), ("B", 4, 2)],
     2 * SKIP_SIL + TAKE_SIL + 5 * FORWARD + SELF_LOOP),
    # skip, A (forward, leave), skip, B (forward, self-loop, leave), skip
    ((A0, A1, B0, B1, B1), [("A", 0, 2), ("B", 2, 3)], 3 * SKIP_SIL + 4 * FORWARD + SELF_LOOP),
    # take SIL, leave, A, skip, C (the other pronunciation of b), take SIL, self-loop, leave
    ((SIL, A0, A1, C0, C1, SIL, SIL), [("SIL", 0, 1), ("A", 1, 2), ("C", 3, 2), ("SIL", 5, 2)],
     2 * TAKE_SIL + SKIP_SIL + 6 * FORWARD + SELF_LOOP),
])
def test_optional_silence_where_the_loglikes_say_so(lang: Lang, pdfs: tuple[int, ...],
                                                     phones: list[tuple[str, int, int]],
                                                     graph_cost: float) -> None:
    loglikes = favour(lang.num_pdfs, [(p, -0.1) for p in pdfs])
    ali = viterbi_align(utterance_graph(lang, ["a", "b"]), loglikes)
    assert ali is not None
    assert ali.pdf_ids.tolist() == list(pdfs) and ali.phones == phones
    assert ali.graph_cost == pytest.approx(graph_cost, abs=1e-4)
    assert ali.score == pytest.approx(-0.1 * len(pdfs) - graph_cost, abs=1e-4)


def test_too_short_returns_none(lang: Lang) -> None:
    graph = utterance_graph(lang, ["a", "b"])
    loglikes = favour(lang.num_pdfs, [(A0, -1.0), (A1, -1.0), (B0, -1.0), (B1, -1.0)])
    assert viterbi_align(graph, loglikes[:3]) is None
    assert viterbi_align(graph, loglikes[:0]) is None
    assert viterbi_align(graph, loglikes).pdf_ids.tolist() == [A0, A1, B0, B1]


def test_retry_beam(lang: Lang) -> None:
    # silence everywhere lures the search into staying in the first silence: a narrow beam prunes every
    # hypothesis that could still reach the end of 15 words; the retry beam finds the (exact) best path
    graph = utterance_graph(lang, ["ab"] * 15)
    loglikes = np.full((65, lang.num_pdfs), -5.0, dtype=np.float32)
    loglikes[:, SIL] = 0.0
    assert viterbi_align(graph, loglikes, beam=1.0, retry_beam=0.0) is None
    retried = viterbi_align(graph, loglikes, beam=1.0, retry_beam=1e4)
    exact = viterbi_align(graph, loglikes, beam=1e4, retry_beam=0.0)
    assert retried is not None and retried.retried and exact is not None and not exact.retried
    assert retried.pdf_ids.tolist() == exact.pdf_ids.tolist()
    assert retried.score == pytest.approx(exact.score)


def test_acoustic_scale(lang: Lang) -> None:
    loglikes = favour(lang.num_pdfs, [(SIL, -0.5), (A0, -0.25), (A0, -0.75), (A1, -1.0)])
    ali = viterbi_align(utterance_graph(lang, ["a"]), loglikes, acoustic_scale=0.5)
    assert ali is not None and ali.pdf_ids.tolist() == [SIL, A0, A0, A1]
    assert ali.log_likelihood == pytest.approx(-2.5, abs=1e-6)  # unscaled
    assert ali.score == pytest.approx(0.5 * -2.5 - ali.graph_cost)


def test_align_batch_does_not_depend_on_num_jobs(lang: Lang) -> None:
    rng = np.random.default_rng(1)
    transcripts = [["a", "b"], ["ab"], ["b", "a", "ab"], ["a"], ["ab", "ab"], ["b"], ["a", "a"]]
    num_frames = [30, 25, 3, 12, 60, 9, 40]  # the third is too short (needs 8 frames)
    graphs = [utterance_graph(lang, words) for words in transcripts]
    loglikes = [np.log(rng.dirichlet(np.ones(lang.num_pdfs), size=t)).astype(np.float32) for t in num_frames]
    serial = align_batch(graphs, loglikes, num_jobs=1)
    parallel = align_batch(graphs, loglikes, num_jobs=2, chunks_per_job=2)
    assert serial[2] is None and parallel[2] is None
    assert sum(ali is None for ali in serial) == 1
    for one, two, t in zip(serial, parallel, num_frames):
        if one is None:
            continue
        assert one.num_frames == t
        np.testing.assert_array_equal(one.pdf_ids, two.pdf_ids)
        np.testing.assert_array_equal(one.phone_ids, two.phone_ids)
        assert one.phones == two.phones
        assert (one.log_likelihood, one.graph_cost) == (two.log_likelihood, two.graph_cost)
        assert math.isfinite(one.score)
    with pytest.raises(ValueError, match="7 graphs but 6"):
        align_batch(graphs, loglikes[:6])
