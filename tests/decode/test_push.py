"""Tests of tropical weight pushing (asr_kd.decode.push) on a hand-made FST and on HCLG."""

from __future__ import annotations

import kaldi_decoder
import kaldifst
import numpy as np
import pytest
from decode_fixtures import LM_TEXT, make_lang, one_hot_loglikes, pdf_sequence

from asr_kd.decode.graph import build_decoding_graph
from asr_kd.decode.push import completion_costs, push_weights


def test_completion_costs_by_hand() -> None:
    # 0 -a/1-> 1 -b/2-> 3(final 0.5); 0 -c/4-> 2 -d/-1-> 3; 1 self-loop 7; 2 -e/0-> 1
    src, dst = np.array([0, 1, 0, 2, 1, 2]), np.array([1, 3, 2, 3, 1, 1])
    cost = np.array([1.0, 2.0, 4.0, -1.0, 7.0, 0.0])
    final = np.array([np.inf, np.inf, np.inf, 0.5])
    np.testing.assert_allclose(completion_costs(src, dst, cost, final), [3.5, 2.5, -0.5, 0.5])
    with pytest.raises(ValueError, match="negative cost"):
        completion_costs(np.array([0, 1]), np.array([1, 0]), np.array([-1.0, 0.5]), np.array([np.inf, 0.0]))


def test_pushed_hand_made_fst() -> None:
    fst = kaldifst.StdVectorFst()
    for _ in range(4):
        fst.add_state()
    fst.start = 0
    for s, i, c, t in ((0, 1, 1.0, 1), (1, 2, 2.0, 3), (0, 3, 4.0, 2), (2, 4, -1.0, 3), (1, 5, 7.0, 1), (2, 6, 0.0, 1)):
        fst.add_arc(s, kaldifst.StdArc(i, i, c, t))
    fst.set_final(3, 0.5)
    pushed = push_weights(fst)
    costs = {(s, a.ilabel): a.weight.value for s in range(4) for a in kaldifst.ArcIterator(pushed, s)}
    # V = 3.5, 2.5, -0.5, 0.5: w + V(t) - V(s)
    assert costs == pytest.approx({(0, 1): 0.0, (1, 2): 0.0, (0, 3): 0.0, (2, 4): 0.0, (1, 5): 7.0, (2, 6): 3.0})
    assert pushed.final(3).value == pytest.approx(0.0)


def test_pushed_hclg_decodes_the_same(tmp_path) -> None:
    lang = make_lang(tmp_path)
    hclg = build_decoding_graph(tmp_path / "lang", LM_TEXT, order=2)
    pushed = push_weights(hclg)
    best_out = [min((a.weight.value for a in kaldifst.ArcIterator(pushed, s)), default=np.inf) for s in range(pushed.num_states)]
    finals = [pushed.final(s).value for s in range(pushed.num_states)]
    assert min(min(b, f) for b, f in zip(best_out, finals)) == pytest.approx(0.0, abs=1e-4)  # the cheapest way out
    shifts = []
    for words in (["one", "two", "three"], ["ten"], ["three", "ten", "two", "one"]):
        loglikes = one_hot_loglikes(lang, pdf_sequence(lang, words, 2, True), low=-3.0)
        results = []
        for graph in (hclg, pushed):
            decoder = kaldi_decoder.FasterDecoder(graph, kaldi_decoder.FasterDecoderOptions(beam=100))
            decoder.decode(kaldi_decoder.DecodableCtc(loglikes))
            ok, lattice = decoder.get_best_path()
            ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(lattice)
            results.append(([w for w in olabels if w], weight.value1, weight.value2))
        (words_a, graph_a, ac_a), (words_b, graph_b, ac_b) = results
        assert words_a == words_b == [lang.word_to_id[w] for w in words] and ac_a == pytest.approx(ac_b, abs=1e-3)
        shifts.append(graph_a - graph_b)
    assert shifts == pytest.approx([shifts[0]] * 3, abs=1e-3) and shifts[0] > 0  # every path drops by V(start)
