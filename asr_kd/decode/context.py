"""What the decoding graph needs from an acoustic model's HMMs: the context tree, the transitions, and the
HCLG input labels they give.

Usage::

    from asr_kd.decode.context import MonophoneTree, LangTransitions, hmm_labels
    tree, transitions = MonophoneTree(lang), LangTransitions(lang)     # the lang's monophone HMMs
    # or the align stage's: asr_kd.hmm's ContextDependency.load(tree.json), TransitionModel.load(...)
    labels = hmm_labels(lang, tree, transitions, windows)              # windows: phone-id tuples, len N

The two protocols are those of ``asr_kd.hmm.tree.ContextDependency`` and
``asr_kd.hmm.transitions.TransitionModel`` (Kaldi's ContextDependency and TransitionModel):
a tree maps a phone context window (``N`` phone ids, ``0`` = no phone: utterance start or end, as
``kaldifst.compose_context`` writes them) and an HMM state of the window's central phone (position ``P``)
to a pdf id; the transitions give the (self-loop, forward) log-probabilities of each (phone, HMM state).

HCLG input labels (:class:`HmmLabels`): kaldi-decoder reads ``matrix[t, label - 1]``, and the self-loop
of an HMM state is added after determinization from the label alone, so a label must fix both the pdf and
the self-loop cost. Label ``d + 1`` is pdf ``d`` with the self-loop cost of its first (window, state) in
window order; a pdf whose (phone, state)s have other self-loop costs (a tree that ties states across
phones with different transitions) gets extra labels ``num_pdfs + 1 + j`` scoring column
``extra_pdfs[j]``: :func:`label_columns` appends those columns to a ``(T, num_pdfs)`` matrix. A
monophone system has no extra labels: its labels are pdf id + 1, as before context dependency.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from asr_kd.data.lang import Lang

#: self-loop costs closer than this (nats) share a label
_COST_DIGITS = 6


@runtime_checkable
class ContextTree(Protocol):
    """Kaldi's ContextDependency: (phone window, HMM state of its central phone) -> pdf id."""

    context_width: int  #: N: 1 monophone, 3 triphone
    central_position: int  #: P: 0 monophone, 1 triphone
    num_pdfs: int

    def pdf(self, window: Sequence[int], hmm_state: int) -> int: ...

    def save(self, path) -> None: ...


@runtime_checkable
class Transitions(Protocol):
    """Kaldi's TransitionModel, per (phone id, HMM state): (self-loop, forward) log-probabilities (nats)."""

    def log_probs(self, phone: int, hmm_state: int) -> tuple[float, float]: ...

    def save(self, path) -> None: ...


class MonophoneTree:
    """The lang's own pdfs: window ``(p,)``, state ``s`` -> ``lang.pdf_ids(p)[s]`` (N = 1, P = 0)."""

    context_width = 1
    central_position = 0

    def __init__(self, lang: Lang) -> None:
        self.lang = lang
        self.num_pdfs = lang.num_pdfs

    def pdf(self, window: Sequence[int], hmm_state: int) -> int:
        if len(window) != 1:
            raise ValueError(f"a monophone tree takes windows of 1 phone, got {list(window)}")
        return self.lang.pdf_ids(self.lang.phone_symbols[window[0]])[hmm_state]

    def save(self, path) -> None:  # pragma: no cover - the monophone graph is keyed without a tree hash
        raise NotImplementedError("the monophone tree is the lang's; it has no file of its own")


class LangTransitions:
    """The lang topology's fixed self-loop probabilities (``lang.transition_logprobs``)."""

    def __init__(self, lang: Lang) -> None:
        self.lang = lang

    def log_probs(self, phone: int, hmm_state: int) -> tuple[float, float]:
        return self.lang.transition_logprobs(self.lang.phone_symbols[phone])[hmm_state]

    def save(self, path) -> None:  # pragma: no cover - the lang topology is keyed by the lexicon hash
        raise NotImplementedError("the lang topology's transitions have no file of their own")


class ScaledTransitions:
    """``transitions`` with every log-probability times ``scale`` (Kaldi's ``--self-loop-scale``: our
    left-to-right HMMs have only self-loops and forward transitions, both scaled)."""

    def __init__(self, transitions: Transitions, scale: float) -> None:
        if not scale > 0.0:
            raise ValueError(f"self_loop_scale must be > 0, got {scale}")
        self.transitions, self.scale = transitions, float(scale)

    def log_probs(self, phone: int, hmm_state: int) -> tuple[float, float]:
        loop, forward = self.transitions.log_probs(phone, hmm_state)
        return loop * self.scale, forward * self.scale

    def save(self, path) -> None:  # pragma: no cover - graphs key the scale on its own
        raise NotImplementedError("a scaled view of a transition model is not saved; save the model")


def is_monophone(tree: ContextTree) -> bool:
    return tree.context_width == 1 and tree.central_position == 0


def saved_sha256(obj: ContextTree | Transitions) -> str:
    """sha256 of what ``obj.save`` writes (the HCLG cache key of a tree or a transition model)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "saved.json"
        obj.save(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class HmmLabels:
    """HCLG input labels of the HMM states (module docstring): label -> pdf and self-loop cost."""

    num_pdfs: int
    extra_pdfs: list[int] = field(default_factory=list)  #: pdf of label num_pdfs + 1 + j
    self_loop: dict[int, float] = field(default_factory=dict)  #: label -> self-loop cost (nats)
    _by_pdf_cost: dict[tuple[int, float], int] = field(default_factory=dict, repr=False)

    @property
    def num_labels(self) -> int:
        """The largest HMM-state label (labels are 1..num_labels; higher ones are disambiguation symbols)."""
        return self.num_pdfs + len(self.extra_pdfs)

    def label(self, pdf: int, self_loop_cost: float) -> int:
        """The label of ``pdf`` with ``self_loop_cost`` (new labels are given in call order)."""
        if not 0 <= pdf < self.num_pdfs:
            raise ValueError(f"pdf id {pdf} out of range: the tree has {self.num_pdfs} pdfs")
        key = (pdf, round(float(self_loop_cost), _COST_DIGITS))
        if key not in self._by_pdf_cost:
            if pdf + 1 not in self.self_loop:
                label = pdf + 1
            else:
                self.extra_pdfs.append(pdf)
                label = self.num_labels
            self._by_pdf_cost[key] = label
            self.self_loop[label] = float(self_loop_cost)
        return self._by_pdf_cost[key]


def label_columns(loglikes: np.ndarray, extra_pdfs: Sequence[int]) -> np.ndarray:
    """``(T, num_pdfs)`` -> ``(T, num_pdfs + len(extra_pdfs))``: column ``label - 1`` scores that HCLG input
    label, the extra label ``num_pdfs + 1 + j`` with pdf ``extra_pdfs[j]``'s column (the same array when
    there are none). The one place the label layout meets a score matrix (building and decoding)."""
    if not len(extra_pdfs):
        return loglikes
    num_pdfs = loglikes.shape[-1]
    bad = [p for p in extra_pdfs if not 0 <= int(p) < num_pdfs]
    if bad:
        raise ValueError(f"extra label pdfs {bad[:5]} out of range for a matrix of {num_pdfs} pdfs: the graph was "
                         "built for another tree")  # fmt: skip
    return np.concatenate([loglikes, loglikes[:, [int(p) for p in extra_pdfs]]], axis=1)


@dataclass
class HmmChain:
    """The left-to-right HMM of one phone window: a label and a forward cost per state."""

    labels: list[int]
    forward: list[float]  #: -ln P(leaving the state)


def hmm_labels(lang: Lang, tree: ContextTree, transitions: Transitions,
               windows: Iterable[Sequence[int]]) -> tuple[HmmLabels, dict[tuple[int, ...], HmmChain]]:
    """The labels and the HMM chain of every window (len ``tree.context_width``), in the given order.

    The number of HMM states of a window is that of its central phone in the lang topology.
    """
    labels = HmmLabels(tree.num_pdfs)
    chains: dict[tuple[int, ...], HmmChain] = {}
    for window in windows:
        window = tuple(int(p) for p in window)
        if window in chains:
            continue
        if len(window) != tree.context_width:
            raise ValueError(f"phone window {list(window)} has {len(window)} phones; the tree's context width "
                             f"is {tree.context_width}")  # fmt: skip
        phone = window[tree.central_position]
        if not 0 < phone < len(lang.phone_symbols) or lang.phone_symbols[phone] not in lang.topology:
            raise ValueError(f"phone window {list(window)}: central phone {phone} is not a phone of the lang")
        chain = HmmChain([], [])
        for state in range(lang.num_states(lang.phone_symbols[phone])):
            loop_lp, forward_lp = transitions.log_probs(phone, state)
            chain.labels.append(labels.label(int(tree.pdf(window, state)), -loop_lp))
            chain.forward.append(-forward_lp)
        chains[window] = chain
    return labels, chains


def load_tree(path: Path | str) -> ContextTree:
    """The align stage's ``tree.json`` (:class:`asr_kd.hmm.tree.ContextDependency`)."""
    from asr_kd.hmm.tree import ContextDependency

    return ContextDependency.load(path)


def load_transitions(path: Path | str) -> Transitions:
    """The align stage's ``transitions.json`` (:class:`asr_kd.hmm.transitions.TransitionModel`)."""
    from asr_kd.hmm.transitions import TransitionModel

    return TransitionModel.load(path)
