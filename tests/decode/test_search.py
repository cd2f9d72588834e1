"""Tests of the search settings (asr_kd.decode.decoder.search_utterance): the beam scaled with the acoustic
scale, retries with a doubled beam, the count of utterances without a final state, the lattice decoder."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from decode_fixtures import LM_TEXT, make_lang, one_hot_loglikes, pdf_sequence

from asr_kd.decode.decoder import (
    Hypothesis,
    search_batch,
    search_beam,
    search_utterance,
)
from asr_kd.decode.graph import build_decoding_graph, ensure_decoding_graph


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("search")
    lang = make_lang(tmp)
    return lang, build_decoding_graph(tmp / "lang", LM_TEXT, order=2), ensure_decoding_graph(tmp / "lang", LM_TEXT, 2)[0]


def trap(lang, tail: int = 4, margin: float = 30.0) -> np.ndarray:
    """``three`` as far as its first phone ``th``, then ``tail`` frames that favour th's last state by
    ``margin`` per frame: the only paths to a final state (r iy SIL in the tail) cost ``tail * margin``
    more than staying in ``th``, which is not final."""
    pdfs = pdf_sequence(lang, ["three"], 2, True)
    th_last = lang.pdf_ids("th")[-1]
    head = pdfs[: pdfs.index(th_last) + 2]
    matrix = one_hot_loglikes(lang, head + [th_last] * tail, low=-margin)
    return matrix


def test_search_beam() -> None:
    assert search_beam(13.0, 0.1) == pytest.approx(13.0)
    assert search_beam(13.0, 0.05) == pytest.approx(13.0)  # never below the given beam
    assert search_beam(13.0, 1.0) == pytest.approx(130.0)
    assert search_beam(13.0, 1.0, scale_beam=False) == 13.0


def test_fixed_beam_ends_without_final_state_scaled_beam_does_not(setup) -> None:
    lang, graph, _ = setup
    matrix = trap(lang)  # the final paths cost 4 * 30 = 120 more at scale 1
    search = partial(search_utterance, graph, matrix, min_active=1)  # the toy graph has < 20 active states
    fixed = search(beam=13.0, acoustic_scale=1.0, scale_beam=False, max_retries=0)
    assert not fixed.reached_final and fixed.retries == 0
    scaled = search(beam=13.0, acoustic_scale=1.0)  # beam 130 > 120
    assert scaled.reached_final and scaled.retries == 0
    assert scaled.word_ids == [lang.word_to_id["three"]]
    # retries double a fixed beam: 13, 26, 52 are all < 120 (2 retries, no final); 104, 208: the 4th retry
    assert search(13.0, acoustic_scale=1.0, scale_beam=False, max_retries=2) == Hypothesis(
        [lang.word_to_id["three"]], False, 2)  # fmt: skip
    four = search(13.0, acoustic_scale=1.0, scale_beam=False, max_retries=4)
    assert four.reached_final and four.retries == 4
    # the same fixed beam at a smaller scale: the gap shrinks with the scale (0.02 * 120 = 2.4 + graph costs)
    assert search(13.0, acoustic_scale=0.02, scale_beam=False, max_retries=0).reached_final


@pytest.mark.parametrize("decoder", ["faster", "lattice"])
def test_decoders_agree_and_batch(setup, decoder: str) -> None:
    lang, graph, graph_path = setup
    sentences = [["one", "two", "three"], ["ten"], ["three", "ten", "two", "one"]]
    matrices = [one_hot_loglikes(lang, pdf_sequence(lang, w, 3, True)) for w in sentences]
    hyps = search_batch(graph_path, matrices, num_jobs=1, acoustic_scale=1.0, decoder=decoder)
    assert [h.word_ids for h in hyps] == [[lang.word_to_id[w] for w in s] for s in sentences]
    assert all(h.reached_final and h.retries == 0 for h in hyps)
    trapped = search_utterance(graph, trap(lang), 13.0, acoustic_scale=1.0, scale_beam=False, max_retries=0,
                               decoder=decoder, min_active=1)  # fmt: skip
    assert not trapped.reached_final
    with pytest.raises(ValueError, match="decoder"):
        search_utterance(graph, matrices[0], decoder="beam")
