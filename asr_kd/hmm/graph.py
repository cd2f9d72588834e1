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

:func:`alignment_graph` builds the same graph without transition probabilities, as Kaldi's
compile-train-graphs does with transition-ids: its input label ``k + 1`` is a *column* ``k``, a
(local pdf, phone, HMM state, self-loop or forward) tuple, and the search adds the transition's current
log-probability to that column's log-likelihood (:meth:`AlignmentGraph.column_costs`). The graph is built
once per tree and serves every realignment while the transition model is re-estimated. Each frame pays
the transition it takes: the self-loop of its state, or the forward transition out of the previous state
when it enters a state; the forward transition out of a phone's last state is paid on the phone's first
frame (same path costs, one frame earlier for the beam).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass
class AlignmentGraph:
    """A forced-alignment graph whose input labels are columns (module docstring): label ``k + 1`` is
    column ``k``, which reads pdf ``pdfs[column_pdf[k]]`` and pays the transition of HMM state
    ``column_state[k]`` of ``column_phone[k]`` (its self-loop where ``column_self_loop[k]``, else its
    forward transition)."""

    fst: kaldifst.StdVectorFst
    pdfs: np.ndarray  #: (P,) int64 global pdf ids the graph uses
    column_pdf: np.ndarray  #: (K,) int64 index into ``pdfs``
    column_phone: np.ndarray  #: (K,) int64 phone id
    column_state: np.ndarray  #: (K,) int64 HMM state whose transition the column pays
    column_self_loop: np.ndarray  #: (K,) bool
    _entry: np.ndarray | None = None  #: (K,) bool: the column of a phone's first frame
    _phone_start: np.ndarray | None = None

    @property
    def column_phone_start(self) -> np.ndarray:
        """(K,) int64: the phone id of the columns that start a phone (its entry: the forward
        transition of its last state), 0 for the others."""
        if self._phone_start is None:
            self._phone_start = np.where(self._entry, self.column_phone, 0)
        return self._phone_start

    def search_columns(self, transitions: TransitionModel, self_loop_scale: float = 1.0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``columns`` of :func:`asr_kd.align.viterbi.viterbi_align` under ``transitions``, their
        log-probabilities times ``self_loop_scale`` (Kaldi's ``--self-loop-scale``)."""
        costs = self.column_costs(transitions)
        if self_loop_scale != 1.0:
            costs = (costs * np.float32(self_loop_scale)).astype(np.float32)
        return self.column_pdf, costs, self.column_phone_start

    def column_costs(self, transitions: TransitionModel) -> np.ndarray:
        """(K,) float32 natural-log probabilities of every column's transition under ``transitions``."""
        self_loop, forward = transitions.log_prob_tables()
        return np.where(
            self.column_self_loop,
            self_loop[self.column_phone, self.column_state],
            forward[self.column_phone, self.column_state],
        ).astype(np.float32)


def alignment_graph(
    lang: Lang, words: Sequence[str], tree: ContextDependency, optional_silence: bool = True
) -> AlignmentGraph:
    """The forced-alignment graph of one transcript with transition columns (module docstring).

    Raises:
        AlignmentError: a word has no pronunciation.
    """
    columns: dict[tuple[int, int, int, bool], int] = {}
    local: dict[int, int] = {}
    entries: set[int] = set()

    def column(pdf: int, phone: int, state: int, self_loop: bool) -> int:
        return columns.setdefault((local.setdefault(pdf, len(local)), phone, state, self_loop), len(columns))

    def add_hmm(out, window, phone, src, dst, entry_cost) -> None:
        n = _num_states(lang, phone)
        pdfs = [tree.pdf(window, s) for s in range(n)]
        states = [out.add_state() for _ in pdfs]
        entry = column(pdfs[0], phone, n - 1, False)  # forward out of the last state: n - 1 > any i < n - 1
        entries.add(entry)
        out.add_arc(src, kaldifst.StdArc(entry + 1, phone, entry_cost, states[0]))
        for i, state in enumerate(states):
            out.add_arc(state, kaldifst.StdArc(column(pdfs[i], phone, i, True) + 1, 0, 0.0, state))
            if i + 1 < n:
                out.add_arc(state, kaldifst.StdArc(column(pdfs[i + 1], phone, i, False) + 1, 0, 0.0, states[i + 1]))
            else:
                out.add_arc(state, kaldifst.StdArc(0, 0, 0.0, dst))

    fst = _expand(lang, words, tree, optional_silence, add_hmm)
    keys = sorted(columns, key=columns.get)
    table = np.array(keys, dtype=np.int64).reshape(-1, 4)
    return AlignmentGraph(
        fst, np.array(sorted(local, key=local.get), dtype=np.int64), table[:, 0], table[:, 1], table[:, 2],
        table[:, 3].astype(bool), np.isin(np.arange(len(keys)), list(entries)),
    )  # fmt: skip


def _expand(lang: Lang, words: Sequence[str], tree: ContextDependency, optional_silence: bool, add_hmm):
    """``phone_graph``, through the context transducer, with ``add_hmm(fst, window, phone, src, dst,
    cost)`` putting the HMM of every arc's central phone in place of the arc."""
    phones = phone_graph(lang, words, optional_silence)
    if tree.context_width == 1:
        cfst, windows = phones, None
    else:
        cfst, windows = kaldifst.compose_context([], tree.context_width, tree.central_position, phones)
    out = kaldifst.StdVectorFst()
    for _ in range(cfst.num_states):
        out.add_state()
    out.start = cfst.start
    centre = tree.central_position
    for state in range(cfst.num_states):
        final = cfst.final(state)
        if final.value != math.inf:
            out.set_final(state, final.value)
        for arc in kaldifst.ArcIterator(cfst, state):
            window = [arc.ilabel] if windows is None else windows[arc.ilabel]
            phone = window[centre] if len(window) == tree.context_width else 0
            if arc.ilabel == 0 or phone <= 0:
                out.add_arc(state, kaldifst.StdArc(0, 0, arc.weight.value, arc.nextstate))
            else:
                add_hmm(out, window, phone, state, arc.nextstate, arc.weight.value)
    out.output_symbols = _symbol_table(tuple(lang.phone_symbols))
    kaldifst.arcsort(out, sort_type="ilabel")
    return out


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
    local: dict[int, int] = {}
    label = (lambda pdf: local.setdefault(pdf, len(local))) if local_pdfs else (lambda pdf: pdf)

    def add_hmm(fst, window, phone, src, dst, entry_cost) -> None:
        n = _num_states(lang, phone)
        pdfs = [label(tree.pdf(window, s)) for s in range(n)]
        _add_hmm(fst, pdfs, [transitions.log_probs(phone, s) for s in range(n)], phone, src, dst, entry_cost)

    out = _expand(lang, words, tree, optional_silence, add_hmm)
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
