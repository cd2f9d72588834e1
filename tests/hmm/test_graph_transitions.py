"""Tests of context training graphs (asr_kd.hmm.graph), transition models and GMM systems (asr_kd.hmm)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "align"))
from test_graph import make_lang, pdf_sequences

from asr_kd.align.gmm import DiagGmm
from asr_kd.align.graph import utterance_graph
from asr_kd.align.viterbi import viterbi_align
from asr_kd.hmm.graph import alignment_graph, context_graph
from asr_kd.hmm.system import GmmSystem, StaleSystemError, lang_sha256
from asr_kd.hmm.transitions import TransitionModel
from asr_kd.hmm.tree import ContextDependency, Question


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    return make_lang(tmp_path_factory.mktemp("hmm_lang"))


def test_monophone_context_graph_equals_the_monophone_graph(lang) -> None:
    tree, trans = ContextDependency.monophone(lang), TransitionModel.from_lang(lang)
    for words in (["a"], ["b", "ab"]):
        for frames in (3, 6):
            mine = pdf_sequences(context_graph(lang, words, tree, trans), frames)
            ref = pdf_sequences(utterance_graph(lang, words), frames)
            assert mine.keys() == ref.keys()
            assert all(mine[k] == pytest.approx(ref[k], abs=1e-5) for k in ref)


def triphone_tree(lang) -> ContextDependency:
    """A's state 0 has pdf 8 after SIL or at the start, pdf 2 otherwise; every other state: the lang's pdf."""
    sil = lang.phone_to_id["SIL"]
    roots = {
        (lang.phone_to_id[p], s): pdf
        for p in lang.phones
        for s, pdf in enumerate(lang.pdf_ids(p))
    }
    roots[(lang.phone_to_id["A"], 0)] = Question(0, [0, sil], 8, 2)
    return ContextDependency(3, 1, roots)


def test_triphone_graph_uses_the_left_context(lang) -> None:
    tree, trans = triphone_tree(lang), TransitionModel.from_lang(lang)
    graph = context_graph(lang, ["b", "a"], tree, trans)
    seqs = pdf_sequences(graph, 4)
    # "b a" in 4 frames without silence: B or C (2 states), then A: its state 0 after B/C is pdf 2
    assert set(seqs) == {(4, 5, 2, 3), (6, 7, 2, 3)}
    seqs = pdf_sequences(graph, 5)
    assert (4, 5, 0, 8, 3) in seqs and (4, 5, 0, 2, 3) not in seqs  # after SIL: pdf 8
    assert pdf_sequences(context_graph(lang, ["a"], tree, trans), 2) == {
        (8, 3): pytest.approx(-2 * math.log(0.4) - 2 * math.log(0.8), abs=1e-5)
    }
    # Viterbi picks the context pdfs and reports phones on the first frame of each
    loglikes = np.full((5, tree.num_pdfs), -20.0, np.float32)
    for t, pdf in enumerate((6, 7, 0, 8, 3)):
        loglikes[t, pdf] = -1.0
    ali = viterbi_align(graph, loglikes)
    assert ali.pdf_ids.tolist() == [6, 7, 0, 8, 3]
    assert [p for p, _, _ in ali.phones] == ["C", "SIL", "A"]


def test_transition_estimate_counts_self_loops_and_visits(lang) -> None:
    trans = TransitionModel.from_lang(lang)
    a = lang.phone_to_id["A"]
    # A: state 0 for 3 frames then state 1 for 2, then again A (state 0 one frame, state 1 one frame)
    phones, states = [a] * 7, [0, 0, 0, 1, 1, 0, 1]
    new = trans.estimate([(phones, states)], min_count=2)
    assert new.log_probs(a, 0) == pytest.approx((math.log(2 / 4), math.log(2 / 4)))
    assert new.log_probs(a, 1) == pytest.approx((math.log(1 / 3), math.log(2 / 3)))
    b = lang.phone_to_id["B"]
    assert (
        new.log_probs(b, 0)
        == trans.log_probs(b, 0)
        == pytest.approx((math.log(0.6), math.log(0.4)))
    )
    floored = trans.estimate([([a] * 3, [0, 1, 1])], min_count=1, floor=0.1)
    assert floored.self_loop[(a, 0)] == pytest.approx(0.1)  # ML estimate 0, floored


def test_transitions_round_trip(tmp_path, lang) -> None:
    trans = TransitionModel.from_lang(lang).estimate(
        [([3] * 5, [0, 0, 0, 1, 1])], min_count=1
    )
    trans.save(tmp_path / "transitions.json")
    assert (
        TransitionModel.load(tmp_path / "transitions.json").self_loop == trans.self_loop
    )


def test_system_round_trip_and_refuses_another_lang(tmp_path, lang) -> None:
    tree = triphone_tree(lang)
    gmm = DiagGmm(
        torch.randn(tree.num_pdfs, 1, 39),
        torch.rand(tree.num_pdfs, 1, 39) + 0.5,
        torch.zeros(tree.num_pdfs, 1),
    )
    system = GmmSystem(
        "tri1",
        gmm,
        {"kind": "deltas"},
        tree,
        TransitionModel.from_lang(lang),
        lang_sha256(lang),
        {"pass": {"num_leaves": 9}},
    )
    system.save(tmp_path / "final.gmm.pt")
    back = GmmSystem.load(
        tmp_path / "final.gmm.pt", expected_lang_sha256=lang_sha256(lang)
    )
    fbank = torch.randn(50, 80)
    assert torch.allclose(back.log_likelihoods(fbank), system.log_likelihoods(fbank))
    assert back.tree.to_json() == tree.to_json() and back.config == system.config
    other = make_lang_other(tmp_path)
    with pytest.raises(StaleSystemError, match="another lang"):
        GmmSystem.load(
            tmp_path / "final.gmm.pt", expected_lang_sha256=lang_sha256(other)
        )
    torch.save({"gmm": {}}, tmp_path / "old.gmm.pt")
    with pytest.raises(StaleSystemError, match="old.gmm.pt"):
        GmmSystem.load(tmp_path / "old.gmm.pt")


def make_lang_other(tmp_path):
    from asr_kd.data.lang import prepare_lang

    (tmp_path / "other.txt").write_text("a A\nb B\n", encoding="utf-8")
    return prepare_lang(
        tmp_path / "other.txt", tmp_path / "other_lang", num_states=2, num_sil_states=1
    )


def test_local_pdf_graph_aligns_like_the_global_one(lang) -> None:
    tree, trans = triphone_tree(lang), TransitionModel.from_lang(lang)
    graph = context_graph(lang, ["b", "a"], tree, trans)
    local, pdfs = context_graph(lang, ["b", "a"], tree, trans, local_pdfs=True)
    assert sorted(pdfs.tolist()) == [0, 2, 3, 4, 5, 6, 7, 8]  # SPN (1) is not in this transcript
    loglikes = np.log(np.random.default_rng(3).dirichlet(np.ones(tree.num_pdfs), size=9)).astype(np.float32)
    full = viterbi_align(graph, loglikes, beam=1e4)
    part = viterbi_align(local, loglikes[:, pdfs], beam=1e4)
    assert pdfs[part.pdf_ids].tolist() == full.pdf_ids.tolist()
    assert part.score == pytest.approx(full.score, abs=1e-4)


def test_transition_column_graph_aligns_like_the_graph_with_transitions(lang) -> None:
    tree = triphone_tree(lang)
    base = TransitionModel.from_lang(lang)
    rng = np.random.default_rng(5)
    trans = TransitionModel({k: float(rng.uniform(0.2, 0.9)) for k in base.self_loop})  # not the topology's
    ali_graph = alignment_graph(lang, ["b", "a"], tree)
    graph = context_graph(lang, ["b", "a"], tree, trans)
    assert sorted(ali_graph.pdfs.tolist()) == [0, 2, 3, 4, 5, 6, 7, 8]
    # every column reads one of the graph's pdfs and pays a transition of its phone's states
    assert ali_graph.column_pdf.max() < len(ali_graph.pdfs) and len(ali_graph.column_pdf) > len(ali_graph.pdfs)
    for _ in range(3):
        loglikes = np.log(rng.dirichlet(np.ones(tree.num_pdfs), size=11)).astype(np.float32)
        full = viterbi_align(graph, loglikes, beam=1e4)
        cols = (ali_graph.column_pdf, ali_graph.column_costs(trans))
        part = viterbi_align(ali_graph.fst, loglikes[:, ali_graph.pdfs], beam=1e4, columns=cols)
        assert ali_graph.pdfs[part.pdf_ids].tolist() == full.pdf_ids.tolist()
        assert part.log_likelihood == pytest.approx(full.log_likelihood, abs=1e-4)
        assert part.graph_cost == pytest.approx(full.graph_cost, abs=1e-4)  # transitions included
        assert [p for p, _, _ in part.phones] == [p for p, _, _ in full.phones]
        # phone starts read from the columns (no walk over the path's arcs): the same alignment
        fast = viterbi_align(ali_graph.fst, loglikes[:, ali_graph.pdfs], beam=1e4,
                             columns=ali_graph.search_columns(trans))
        assert fast.phones == part.phones and fast.phone_ids.tolist() == part.phone_ids.tolist()
        assert fast.pdf_ids.tolist() == part.pdf_ids.tolist() and fast.graph_cost == pytest.approx(part.graph_cost)
    # another transition model changes the costs, not the graph: column costs are its log-probabilities
    self_loop, forward = trans.log_prob_tables()
    k = int(np.flatnonzero(ali_graph.column_self_loop)[0])
    phone, state = int(ali_graph.column_phone[k]), int(ali_graph.column_state[k])
    assert ali_graph.column_costs(trans)[k] == pytest.approx(math.log(trans.self_loop[(phone, state)]), abs=1e-6)
    assert forward[phone, state] == pytest.approx(math.log1p(-trans.self_loop[(phone, state)]))
    assert self_loop.shape == forward.shape


def test_gmm_subset_gives_the_columns_of_the_full_model() -> None:
    g = torch.Generator().manual_seed(0)
    gmm = DiagGmm(torch.randn(6, 3, 4, generator=g), torch.rand(6, 3, 4, generator=g) + 0.5,
                  torch.log_softmax(torch.randn(6, 3, generator=g), -1))
    gmm.log_weights[2, 1:] = -math.inf
    gmm.num_gauss_per_pdf[2] = 1
    x = torch.randn(10, 4, generator=g)
    pdfs = torch.tensor([4, 2, 0])
    assert torch.allclose(gmm.subset(pdfs).log_likelihoods(x), gmm.log_likelihoods(x)[:, pdfs], atol=1e-5)
    assert gmm.subset(torch.tensor([2])).max_gauss == 1


def test_search_columns_scale_the_transition_log_probs(lang) -> None:
    """``search_columns(transitions, s)`` = s x the columns' log-probabilities (Kaldi's --self-loop-scale),
    the pdfs and phone starts unchanged."""
    tree = ContextDependency.monophone(lang)
    graph = alignment_graph(lang, ["b", "a"], tree)
    transitions = TransitionModel.from_lang(lang)
    pdf_1, cost_1, start_1 = graph.search_columns(transitions)
    pdf_s, cost_s, start_s = graph.search_columns(transitions, 0.1)
    assert (pdf_1 == pdf_s).all() and (start_1 == start_s).all()
    assert cost_s == pytest.approx(0.1 * cost_1, rel=1e-6) and (cost_1 < 0).all()
