"""Training graphs for forced alignment (Kaldi's compile-train-graphs) and the flat-start alignment.

The graph of one transcript is built directly with kaldifst, as Kaldi's ``H o C o L o transcript``
without context dependency (each phone state is its own pdf):

- the words in order, each with ALL its lexicon pronunciations as alternatives;
- optional silence (``lang.config.sil_phone``) before the first word, between words and after the last
  word, exactly as in Kaldi's L with optional silence: cost -ln(sil_prob) on taking it, -ln(1 - sil_prob)
  on skipping it (no optional silence when ``sil_prob == 0`` or ``optional_silence=False``);
- each phone expanded into its left-to-right HMM (``lang.topology``). With pdfs ``d_0 .. d_{n-1}`` and
  per-state (self-loop, forward) log-probabilities ``(l_i, f_i)``::

      entry --d_0+1:phone/0--> s_0      s_i --d_i+1:0/-l_i--> s_i      s_i --d_{i+1}+1:0/-f_i--> s_{i+1}
      s_{n-1} --0:0/-f_{n-1}--> exit

  so every frame-consuming arc has input label ``pdf_id + 1`` (0 is epsilon, as kaldi-decoder's
  ``DecodableCtc`` expects), the phone id (``lang.phone_to_id``) is the output label of the first frame
  of each phone (0 elsewhere), and a phone lasts at least ``num_states(phone)`` frames. The path cost is
  ``-ln P(state sequence | transcript)`` in nats; the taken optional silence's -ln(sil_prob) sits on the
  first arc of the silence phone.

Epsilon arcs (phone exits, skipped silences) are kept: FasterDecoder handles them and they never form a
cycle. The result is arc-sorted on input labels, as OpenFst's compose wants; FasterDecoder visits every
arc of a state and does not need it (checked: the same alignments without sorting).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Sequence

import kaldifst
import numpy as np

if TYPE_CHECKING:
    from asr_kd.data.lang import Lang


class AlignmentError(ValueError):
    """A transcript cannot be turned into an alignment graph (e.g. a word without pronunciation)."""

    def __init__(self, message: str, word: str | None = None) -> None:
        super().__init__(message)
        self.word = word  #: the offending word, when there is one


@functools.lru_cache(maxsize=8)
def _symbol_table(symbols: tuple[str, ...]) -> kaldifst.SymbolTable:
    """A kaldifst symbol table with ``symbols[i]`` at id i (shared: OpenFst copies it into each FST)."""
    table = kaldifst.SymbolTable()
    for symbol in symbols:
        table.add_symbol(symbol)
    return table


def _add_phone(fst: kaldifst.StdVectorFst, lang: Lang, phone: str, src: int, dst: int,
               entry_cost: float = 0.0, self_loop_scale: float = 1.0) -> None:
    """Add the left-to-right HMM of ``phone`` between states ``src`` and ``dst`` (see the module doc);
    its transition costs times ``self_loop_scale``."""
    pdfs = lang.pdf_ids(phone)
    transitions = lang.transition_logprobs(phone)
    states = [fst.add_state() for _ in pdfs]
    fst.add_arc(src, kaldifst.StdArc(pdfs[0] + 1, lang.phone_to_id[phone], entry_cost, states[0]))
    for i, (state, (self_loop, forward)) in enumerate(zip(states, transitions)):
        self_loop, forward = self_loop * self_loop_scale, forward * self_loop_scale
        fst.add_arc(state, kaldifst.StdArc(pdfs[i] + 1, 0, -self_loop, state))
        if i + 1 < len(states):
            fst.add_arc(state, kaldifst.StdArc(pdfs[i + 1] + 1, 0, -forward, states[i + 1]))
        else:
            fst.add_arc(state, kaldifst.StdArc(0, 0, -forward, dst))


def _add_optional_silence(fst: kaldifst.StdVectorFst, lang: Lang, src: int, sil_prob: float,
                          self_loop_scale: float = 1.0) -> int:
    """From ``src``, optional silence into a new state that is returned (``src`` when ``sil_prob == 0``)."""
    if sil_prob <= 0.0:
        return src
    dst = fst.add_state()
    fst.add_arc(src, kaldifst.StdArc(0, 0, -math.log1p(-sil_prob), dst))
    _add_phone(fst, lang, lang.config.sil_phone, src, dst, entry_cost=-math.log(sil_prob),
               self_loop_scale=self_loop_scale)
    return dst


def pronunciations(lang: Lang, word: str) -> list[tuple[str, ...]]:
    """The lexicon pronunciations of ``word``; :class:`AlignmentError` naming it when it has none."""
    prons = lang.lexicon.get(word)
    if not prons:
        raise AlignmentError(f"word {word!r} has no pronunciation in the lexicon (map out-of-vocabulary "
                             f"words to {lang.config.oov_word!r} first, or skip the utterance)", word=word)
    return prons


def utterance_graph(lang: Lang, words: Sequence[str], optional_silence: bool = True,
                    self_loop_scale: float = 1.0) -> kaldifst.StdVectorFst:
    """The forced-alignment graph of one transcript (see the module docstring for its shape).

    Args:
        lang: the lang directory in memory (lexicon, topology, pdf ids).
        words: the transcript, one word per item, all in ``lang.lexicon``.
        optional_silence: allow ``sil_phone`` at the start, between words and at the end with probability
            ``lang.config.sil_prob``; False: no silence unless the transcript has the silence word.
        self_loop_scale: multiplies the HMM transition costs (self-loops and forward transitions), not the
            optional-silence costs: Kaldi's ``--self-loop-scale`` (its aligners use 0.1, the acoustic
            scale, so that the duration model weighs as much as the scaled acoustics). 1.0: the costs are
            ``-ln P(state sequence | transcript)``.

    Returns:
        A ``kaldifst.StdVectorFst``: input labels pdf id + 1 (0 = epsilon), output labels phone ids on the
        first frame of each phone (its output symbol table is phones.txt), costs in nats; one start
        state, one final state (final weight 0).

    Raises:
        AlignmentError: a word has no pronunciation (``err.word`` names it).
    """
    word_prons = [pronunciations(lang, word) for word in words]
    sil_prob = lang.config.sil_prob if optional_silence else 0.0
    fst = kaldifst.StdVectorFst()
    junction = fst.add_state()
    fst.start = junction
    for prons in word_prons:
        word_start = _add_optional_silence(fst, lang, junction, sil_prob, self_loop_scale)
        word_end = fst.add_state()
        for pron in prons:
            state = word_start
            for i, phone in enumerate(pron):
                nxt = word_end if i + 1 == len(pron) else fst.add_state()
                _add_phone(fst, lang, phone, state, nxt, self_loop_scale=self_loop_scale)
                state = nxt
        junction = word_end
    fst.set_final(_add_optional_silence(fst, lang, junction, sil_prob, self_loop_scale), 0.0)
    fst.output_symbols = _symbol_table(tuple(lang.phone_symbols))
    kaldifst.arcsort(fst, sort_type="ilabel")
    return fst


def min_num_frames(lang: Lang, words: Sequence[str]) -> int:
    """The fewest frames any path through ``utterance_graph(lang, words)`` consumes (no silences taken)."""
    return sum(min(sum(lang.num_states(p) for p in pron) for pron in pronunciations(lang, word))
               for word in words)


def equal_alignment(graph: kaldifst.StdVectorFst, num_frames: int, seed: int = 0,
                    num_retries: int = 100) -> np.ndarray | None:
    """Flat-start alignment: a random path through ``graph`` with the frames divided equally among its states.

    Kaldi's ``align-equal-compiled`` (``EqualAlign``): draws a random path (each optional silence and each
    pronunciation chosen at random), gives each state one frame and spreads the remaining frames equally
    over the self-loops on the path; retries with another random path (``num_retries`` times) when the
    path needs more than ``num_frames`` frames (Kaldi tries 10 times; each try costs microseconds). Near
    the minimum length only the paths without optional silence fit, 2^-(num_words + 1) of them: a caller
    may then try ``utterance_graph(..., optional_silence=False)``. The same ``seed`` gives the same result
    (``srand``: not thread-safe).

    Args:
        graph: from :func:`utterance_graph`.
        num_frames: T, the utterance length in frames.
        seed: random seed (per utterance, e.g. a hash of the cut id, for reproducible flat starts).
        num_retries: random paths to try.

    Returns:
        Per-frame pdf ids, ``(T,)`` int32, or None when no path of ``T`` frames was found
        (the utterance is shorter than the transcript needs, or every random path tried was too long).
    """
    if num_frames <= 0:
        return None
    ok, path = kaldifst.equal_align(graph, int(num_frames), int(seed), num_retries=int(num_retries))
    if not ok:
        return None
    ok, ilabels, _, _ = kaldifst.get_linear_symbol_sequence(path)
    if not ok or len(ilabels) != num_frames:  # pragma: no cover - EqualAlign guarantees both
        return None
    return np.asarray(ilabels, dtype=np.int32) - 1
