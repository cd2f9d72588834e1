"""Tests of hybrid decoding (asr_kd.decode.decoder) on the tiny lang of decode_fixtures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from decode_fixtures import LM_TEXT, make_lang, one_hot_loglikes, pdf_sequence

from asr_kd.data.lang import Lang
from asr_kd.decode.decoder import compute_log_priors, decode_batch, decode_utterance, hybrid_loglikes
from asr_kd.decode.graph import build_decoding_graph, ensure_decoding_graph


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("decoder")
    lang = make_lang(tmp)
    graph = build_decoding_graph(tmp / "lang", LM_TEXT, order=2)
    return lang, graph, ensure_decoding_graph(tmp / "lang", LM_TEXT, order=2)[0]


def word_ids(lang: Lang, words: list[str]) -> list[int]:
    return [lang.word_to_id[w] for w in words]


@pytest.mark.parametrize("words", [["one", "two", "three"], ["ten", "two"], ["three", "three", "one"],
                                   ["two"], ["one", "ten", "three", "two", "two"]])
@pytest.mark.parametrize("silence", [True, False])
def test_decodes_one_hot_sequence(setup, words: list[str], silence: bool) -> None:
    lang, graph, _ = setup
    loglikes = one_hot_loglikes(lang, pdf_sequence(lang, words, 3, silence))
    assert decode_utterance(graph, loglikes, acoustic_scale=1.0) == word_ids(lang, words)


def test_decodes_noisy_posteriors_through_priors(setup) -> None:
    """Softmax posteriors of noisy one-hot logits, divided by priors, at Kaldi's acoustic scale 0.1."""
    lang, graph, _ = setup
    rng = np.random.default_rng(0)
    words = ["three", "ten", "one"]
    pdfs = pdf_sequence(lang, words, 4)
    logits = rng.normal(0.0, 1.0, (len(pdfs), lang.num_pdfs)).astype(np.float32)
    logits[np.arange(len(pdfs)), pdfs] += 8.0
    log_posteriors = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    log_priors = compute_log_priors(np.bincount(pdfs, minlength=lang.num_pdfs) + 5)  # every pdf seen
    loglikes = hybrid_loglikes(log_posteriors, log_priors)
    assert decode_utterance(graph, loglikes, acoustic_scale=0.1 * 10) == word_ids(lang, words)
    assert decode_utterance(graph, 10 * loglikes, acoustic_scale=0.1) == word_ids(lang, words)


def test_lm_breaks_acoustic_tie(setup) -> None:
    """'to' and 'two' are homophones; 'to' is not in the LM, so the graph only knows 'two'."""
    lang, graph, _ = setup
    loglikes = one_hot_loglikes(lang, pdf_sequence(lang, ["to"], 3))
    assert decode_utterance(graph, loglikes, acoustic_scale=1.0) == word_ids(lang, ["two"])


def test_empty_and_bad_input(setup) -> None:
    lang, graph, _ = setup
    assert decode_utterance(graph, np.zeros((0, lang.num_pdfs), dtype=np.float32)) == []
    with pytest.raises(ValueError, match="num_pdfs"):
        decode_utterance(graph, np.zeros(5, dtype=np.float32))


def test_compute_log_priors() -> None:
    priors = compute_log_priors(np.array([3, 1, 0, 996]), floor=0.01)
    expected = np.array([0.01, 0.01, 0.996]) / 1.016  # the floor lifts the rare pdfs, then renormalized
    np.testing.assert_allclose(np.exp(priors[[0, 1, 3]]), expected, rtol=1e-6)
    assert priors[2] == np.float32(1e30)  # never seen: disabled, not floored
    with pytest.raises(ValueError, match="pdf_counts"):
        compute_log_priors(np.array([0, 0]))


def test_unseen_pdf_is_never_decoded(setup) -> None:
    """A pdf without frames in the alignments must not win a frame through a tiny prior: with the old
    floor (1e-8) its score log(1e-4) - log(1e-8) = +9.2 beat every trained pdf of this posterior matrix."""
    lang, graph, _ = setup
    rng = np.random.default_rng(0)
    counts = np.full(lang.num_pdfs, 1000)
    counts[0] = 0
    log_priors = compute_log_priors(counts)
    post = np.full((20, lang.num_pdfs), 1e-4)
    post[:, 1:] = rng.dirichlet(np.ones(lang.num_pdfs - 1), size=20) * (1 - 1e-4)
    scores = hybrid_loglikes(np.log(post), log_priors)
    assert np.isfinite(scores).all()
    assert (scores.argmax(axis=1) != 0).all()
    assert scores[:, 0].max() < -1e29


def test_hybrid_loglikes() -> None:
    log_post = np.log(np.array([[0.5, 0.5], [0.9, 0.1]], dtype=np.float32))
    log_priors = np.log(np.array([0.8, 0.2], dtype=np.float32))
    out = hybrid_loglikes(log_post, log_priors)
    np.testing.assert_allclose(out, [[math.log(0.5 / 0.8), math.log(0.5 / 0.2)],
                                     [math.log(0.9 / 0.8), math.log(0.1 / 0.2)]], rtol=1e-5)
    with pytest.raises(ValueError, match="log_priors"):
        hybrid_loglikes(log_post, log_priors[:1])


def test_decode_batch_parallel_matches_serial(setup) -> None:
    lang, _, graph_path = setup
    sequences = [["one", "two"], ["three"], ["ten", "two", "one"], ["two", "three"], ["one"]]
    matrices = [one_hot_loglikes(lang, pdf_sequence(lang, ws, 3)) for ws in sequences]
    expected = [word_ids(lang, ws) for ws in sequences]
    assert decode_batch(graph_path, matrices, num_jobs=1, acoustic_scale=1.0) == expected
    assert decode_batch(graph_path, matrices, num_jobs=2, acoustic_scale=1.0) == expected
    with pytest.raises(FileNotFoundError):
        decode_batch(Path(graph_path).with_name("missing.fst"), matrices)


def _two_readings_graph():
    """Frames of pdf 0 read as one word (1, graph cost 1.0) or as two (2 then 3, cost 0): input labels
    pdf + 1, every state with a pdf-0 self-loop."""
    import kaldifst

    g = kaldifst.StdVectorFst()
    s = [g.add_state() for _ in range(4)]
    g.start = s[0]
    g.add_arc(s[0], kaldifst.StdArc(1, 1, 1.0, s[1]))
    g.add_arc(s[0], kaldifst.StdArc(1, 2, 0.0, s[2]))
    g.add_arc(s[2], kaldifst.StdArc(1, 3, 0.0, s[3]))
    for k in (1, 2, 3):
        g.add_arc(s[k], kaldifst.StdArc(1, 0, 0.0, s[k]))
    g.set_final(s[1], 0.0)
    g.set_final(s[3], 0.0)
    return g


def test_word_penalty_adds_its_cost_to_every_word(tmp_path) -> None:
    from asr_kd.decode.decoder import search_batch, search_utterance, with_word_penalty

    graph = _two_readings_graph()
    loglikes = np.zeros((6, 1), dtype=np.float32)
    assert search_utterance(graph, loglikes).word_ids == [2, 3]  # cost 0 < 1
    # penalty p: one word costs 1 + p, two words 2p; two words win below p = 1, one word above it
    assert search_utterance(with_word_penalty(graph, 0.9), loglikes).word_ids == [2, 3]
    assert search_utterance(with_word_penalty(graph, 1.1), loglikes).word_ids == [1]
    penalized = with_word_penalty(graph, 0.5)
    assert penalized.num_states == graph.num_states  # the same graph, word arcs dearer
    costs = sorted((a.olabel, a.weight.value) for s in range(penalized.num_states)
                   for a in kaldifst_arcs(penalized, s))  # fmt: skip
    assert costs == [(0, 0.0)] * 3 + [(1, 1.5), (2, 0.5), (3, 0.5)]
    path = tmp_path / "g.fst"
    graph.write(str(path))
    hyps = search_batch(path, [loglikes, loglikes], word_penalty=1.1)  # the workers' way: the file + the penalty
    assert [h.word_ids for h in hyps] == [[1], [1]]
    assert search_batch(path, [loglikes], word_penalty=0.0)[0].word_ids == [2, 3]


def kaldifst_arcs(fst, state):
    import kaldifst

    return list(kaldifst.ArcIterator(fst, state))
