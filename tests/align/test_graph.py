"""Tests of the forced-alignment graphs and the flat start (asr_kd.align.graph), against hand-made values.

The tiny lang: SIL (1 state, pdf 0), SPN (1 state, pdf 1), A (2 states, pdfs 2 3), B (pdfs 4 5),
C (pdfs 6 7); self-loop probability 0.6, optional silence probability 0.2, so that self-loop, forward,
taken- and skipped-silence costs all differ.
"""

from __future__ import annotations

import math
from pathlib import Path

import kaldifst
import numpy as np
import pytest

from asr_kd.align import AlignmentError, equal_alignment, min_num_frames, utterance_graph
from asr_kd.data.lang import Lang, prepare_lang

LEXICON = "a A\nb B\nb C\nab A B\n"
SELF_LOOP, FORWARD = -math.log(0.6), -math.log(0.4)  # costs (nats) of a self-loop / of moving on
TAKE_SIL, SKIP_SIL = -math.log(0.2), -math.log(0.8)  # costs of taking / skipping optional silence
SIL, A0, A1, B0, B1, C0, C1 = 0, 2, 3, 4, 5, 6, 7  # pdf ids


def make_lang(tmp_dir: Path) -> Lang:
    (tmp_dir / "lexicon.txt").write_text(LEXICON, encoding="utf-8")
    return prepare_lang(tmp_dir / "lexicon.txt", tmp_dir / "lang", num_states=2, num_sil_states=1,
                        self_loop_prob=0.6, sil_prob=0.2)


@pytest.fixture(scope="module")
def lang(tmp_path_factory: pytest.TempPathFactory) -> Lang:
    return make_lang(tmp_path_factory.mktemp("align_lang"))


def pdf_sequences(graph: kaldifst.StdVectorFst, num_frames: int) -> dict[tuple[int, ...], float]:
    """Every pdf sequence of ``num_frames`` frames the graph accepts -> its lowest path cost (brute force)."""
    found: dict[tuple[int, ...], float] = {}

    def visit(state: int, prefix: tuple[int, ...], cost: float) -> None:
        final = graph.final(state).value
        if len(prefix) == num_frames and math.isfinite(final):
            found[prefix] = min(found.get(prefix, math.inf), cost + final)
        for arc in kaldifst.ArcIterator(graph, state):
            if arc.ilabel == 0:
                visit(arc.nextstate, prefix, cost + arc.weight.value)
            elif len(prefix) < num_frames:
                visit(arc.nextstate, prefix + (arc.ilabel - 1,), cost + arc.weight.value)

    visit(graph.start, (), 0.0)
    return found


def test_tiny_lang_pdfs(lang: Lang) -> None:
    assert [(p, lang.pdf_ids(p)) for p in lang.phones] == [
        ("SIL", [SIL]), ("SPN", [1]), ("A", [A0, A1]), ("B", [B0, B1]), ("C", [C0, C1])]


def test_one_word_graph_shape(lang: Lang) -> None:
    graph = utterance_graph(lang, ["a"])
    # start, after-start-silence, SIL state; A's 2 states, word end; final, SIL state
    assert graph.num_states == 8
    # 2 silences x (skip, enter, self-loop, exit) + A (enter, 2 self-loops, forward, exit)
    assert sum(graph.num_arcs(s) for s in range(graph.num_states)) == 13
    assert graph.is_ilabel_sorted
    no_sil = utterance_graph(lang, ["a"], optional_silence=False)
    assert (no_sil.num_states, sum(no_sil.num_arcs(s) for s in range(no_sil.num_states))) == (4, 5)


def test_one_word_paths_and_costs(lang: Lang) -> None:
    graph = utterance_graph(lang, ["a"])
    assert pdf_sequences(graph, 1) == {}
    assert pdf_sequences(graph, 2) == pytest.approx({(A0, A1): 2 * SKIP_SIL + 2 * FORWARD})
    assert pdf_sequences(graph, 3) == pytest.approx({
        (A0, A0, A1): 2 * SKIP_SIL + SELF_LOOP + 2 * FORWARD,
        (A0, A1, A1): 2 * SKIP_SIL + SELF_LOOP + 2 * FORWARD,
        (SIL, A0, A1): TAKE_SIL + SKIP_SIL + 3 * FORWARD,  # SIL exits with its forward cost
        (A0, A1, SIL): TAKE_SIL + SKIP_SIL + 3 * FORWARD,
    })
    four = pdf_sequences(graph, 4)
    assert set(four) == {
        (A0, A0, A0, A1), (A0, A0, A1, A1), (A0, A1, A1, A1),
        (SIL, A0, A0, A1), (SIL, A0, A1, A1), (SIL, SIL, A0, A1),
        (A0, A0, A1, SIL), (A0, A1, A1, SIL), (A0, A1, SIL, SIL), (SIL, A0, A1, SIL),
    }
    assert four[(SIL, A0, A1, SIL)] == pytest.approx(2 * TAKE_SIL + 4 * FORWARD)
    assert four[(A0, A0, A0, A1)] == pytest.approx(2 * SKIP_SIL + 2 * SELF_LOOP + 2 * FORWARD)


def test_output_labels_are_phones_on_first_frames(lang: Lang) -> None:
    graph = utterance_graph(lang, ["ab"], optional_silence=False)
    labelled = sorted((arc.ilabel - 1, arc.olabel) for s in range(graph.num_states)
                      for arc in kaldifst.ArcIterator(graph, s) if arc.olabel != 0)
    assert labelled == [(A0, lang.phone_to_id["A"]), (B0, lang.phone_to_id["B"])]
    assert all(arc.ilabel != 0 for s in range(graph.num_states) for arc in kaldifst.ArcIterator(graph, s)
               if arc.olabel != 0)
    assert graph.output_symbols.find(lang.phone_to_id["B"]) == "B"


def test_all_pronunciations_are_alternatives(lang: Lang) -> None:
    graph = utterance_graph(lang, ["b"], optional_silence=False)
    assert set(pdf_sequences(graph, 2)) == {(B0, B1), (C0, C1)}
    two_words = utterance_graph(lang, ["a", "b"], optional_silence=False)
    assert set(pdf_sequences(two_words, 4)) == {(A0, A1, B0, B1), (A0, A1, C0, C1)}
    assert min_num_frames(lang, ["a", "b", "ab"]) == 2 + 2 + 4


def test_missing_pronunciation_names_the_word(lang: Lang) -> None:
    with pytest.raises(AlignmentError, match="'zebra'") as info:
        utterance_graph(lang, ["a", "zebra", "b"])
    assert info.value.word == "zebra"


def test_equal_alignment_is_a_path_of_the_graph(lang: Lang) -> None:
    graph = utterance_graph(lang, ["a", "b"])
    for num_frames in (4, 5, 9):
        accepted = pdf_sequences(graph, num_frames)
        for seed in range(5):
            labels = equal_alignment(graph, num_frames, seed)
            assert labels is not None and labels.dtype == np.int32 and labels.shape == (num_frames,)
            assert tuple(labels.tolist()) in accepted
    np.testing.assert_array_equal(equal_alignment(graph, 40, seed=3), equal_alignment(graph, 40, seed=3))


def test_equal_alignment_divides_frames_equally(lang: Lang) -> None:
    graph = utterance_graph(lang, ["ab"], optional_silence=False)
    labels = equal_alignment(graph, 20, seed=0)
    assert labels is not None
    assert np.bincount(labels, minlength=lang.num_pdfs)[[A0, A1, B0, B1]].tolist() == [5, 5, 5, 5]


def test_equal_alignment_too_short(lang: Lang) -> None:
    graph = utterance_graph(lang, ["a", "b"])
    assert equal_alignment(graph, 3, seed=0) is None
    assert equal_alignment(graph, 0, seed=0) is None
    assert equal_alignment(utterance_graph(lang, ["a", "b"], optional_silence=False), 4, seed=0).tolist() in (
        [A0, A1, B0, B1], [A0, A1, C0, C1])
