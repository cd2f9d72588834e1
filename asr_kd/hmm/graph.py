"""Context-dependent training graphs (Kaldi's compile-train-graphs: H o C o L o transcript), with kaldifst.

1. :func:`phone_graph`: the transcript's phone acceptor ``L o G_utt``: each word with all its lexicon
   pronunciations as alternatives, optional silence (``lang.config.sil_phone``) before, between and after
   the words at cost -ln(sil_prob), skipped at cost -ln(1 - sil_prob) (Kaldi's L with optional silence).
   Input and output labels are phone ids.
2. ``kaldifst.compose_context(disambig=[], N, P, ...)``: ``C o`` it; the input labels become indices into
   the list of context windows it returns (``[]`` = epsilon; windows have 0 beyond the utterance ends).
3. H: every arc with a window is expanded into the HMM of its central phone, the pdf of each state taken
   from the tree (``tree.pdf(window, state)``) and the transition costs from the transition model::

       entry --pdf(w,0)+1:phone/(arc cost)--> s_0   s_i --pdf(w,i)+1:0/-l_i--> s_i
       s_i --pdf(w,i+1)+1:0/-f_i--> s_{i+1}          s_{n-1} --0:0/-f_{n-1}--> exit

   as :func:`asr_kd.align.graph.utterance_graph` does for monophones: input labels pdf id + 1, the phone
   id as output label on the first frame of each phone (so :func:`asr_kd.align.viterbi.viterbi_align`
   reads phone segments off the best path), costs in nats. Epsilon windows stay epsilon arcs.

A monophone tree (context width 1) gives the same paths as ``utterance_graph``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import kaldifst
import numpy as np

from asr_kd.align.graph import _symbol_table, pronunciations

if TYPE_CHECKING:
    from asr_kd.data.lang import Lang
    from asr_kd.hmm.transitions import TransitionModel
    from asr_kd.hmm.tree import ContextDependency


def phone_graph(
    lang: Lang, words: Sequence[str], optional_silence: bool = True
) -> kaldifst.StdVectorFst:
    """The phone acceptor of one transcript with optional silence (see the module docstring)."""
    word_prons = [pronunciations(lang, word) for word in words]
    sil_prob = lang.config.sil_prob if optional_silence else 0.0
    sil = lang.phone_to_id[lang.config.sil_phone]
    fst = kaldifst.StdVectorFst()
    junction = fst.add_state()
    fst.start = junction

    def optional_sil(src: int) -> int:
        if sil_prob <= 0.0:
            return src
        dst = fst.add_state()
        fst.add_arc(src, kaldifst.StdArc(0, 0, -math.log1p(-sil_prob), dst))
        fst.add_arc(src, kaldifst.StdArc(sil, sil, -math.log(sil_prob), dst))
        return dst

    for prons in word_prons:
        word_start, word_end = optional_sil(junction), fst.add_state()
        for pron in prons:
            state = word_start
            for i, phone in enumerate(pron):
                nxt = word_end if i + 1 == len(pron) else fst.add_state()
                pid = lang.phone_to_id[phone]
                fst.add_arc(state, kaldifst.StdArc(pid, pid, 0.0, nxt))
                state = nxt
        junction = word_end
    fst.set_final(optional_sil(junction), 0.0)
    return fst


def context_graph(
    lang: Lang,
    words: Sequence[str],
    tree: ContextDependency,
    transitions: TransitionModel,
    optional_silence: bool = True,
    local_pdfs: bool = False,
):
    """The forced-alignment graph of one transcript for a context-dependent model (module docstring).

    Args:
        local_pdfs: number the graph's pdfs locally: input label ``k + 1`` stands for pdf ``pdfs[k]``, and
            ``(graph, pdfs)`` is returned, so that the search reads a ``(T, len(pdfs))`` matrix of only the
            pdfs this transcript can use (a few dozen of thousands).

    Returns:
        The graph (input labels pdf id + 1), or ``(graph, pdfs)`` with ``local_pdfs``.

    Raises:
        AlignmentError: a word has no pronunciation.
    """
    phones = phone_graph(lang, words, optional_silence)
    if tree.context_width == 1:
        cfst, windows = phones, None
    else:
        cfst, windows = kaldifst.compose_context(
            [], tree.context_width, tree.central_position, phones
        )
    out = kaldifst.StdVectorFst()
    for _ in range(cfst.num_states):
        out.add_state()
    out.start = cfst.start
    centre = tree.central_position
    local: dict[int, int] = {}
    label = (lambda pdf: local.setdefault(pdf, len(local))) if local_pdfs else (lambda pdf: pdf)
    for state in range(cfst.num_states):
        final = cfst.final(state)
        if final.value != math.inf:
            out.set_final(state, final.value)
        for arc in kaldifst.ArcIterator(cfst, state):
            window = [arc.ilabel] if windows is None else windows[arc.ilabel]
            phone = window[centre] if len(window) == tree.context_width else 0
            if arc.ilabel == 0 or phone <= 0:
                out.add_arc(
                    state, kaldifst.StdArc(0, 0, arc.weight.value, arc.nextstate)
                )
                continue
            _add_hmm(
                out,
                [label(tree.pdf(window, s)) for s in range(_num_states(lang, phone))],
                [
                    transitions.log_probs(phone, s)
                    for s in range(_num_states(lang, phone))
                ],
                phone,
                state,
                arc.nextstate,
                arc.weight.value,
            )
    out.output_symbols = _symbol_table(tuple(lang.phone_symbols))
    kaldifst.arcsort(out, sort_type="ilabel")
    if local_pdfs:
        return out, np.array(sorted(local, key=local.get), dtype=np.int64)
    return out


def _num_states(lang: Lang, phone_id: int) -> int:
    return lang.num_states(lang.phone_symbols[phone_id])


def _add_hmm(
    fst: kaldifst.StdVectorFst,
    pdfs: list[int],
    transitions: list[tuple[float, float]],
    phone: int,
    src: int,
    dst: int,
    entry_cost: float,
) -> None:
    states = [fst.add_state() for _ in pdfs]
    fst.add_arc(src, kaldifst.StdArc(pdfs[0] + 1, phone, entry_cost, states[0]))
    for i, (state, (self_loop, forward)) in enumerate(zip(states, transitions)):
        fst.add_arc(state, kaldifst.StdArc(pdfs[i] + 1, 0, -self_loop, state))
        if i + 1 < len(states):
            fst.add_arc(
                state, kaldifst.StdArc(pdfs[i + 1] + 1, 0, -forward, states[i + 1])
            )
        else:
            fst.add_arc(state, kaldifst.StdArc(0, 0, -forward, dst))
