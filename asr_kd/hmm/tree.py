"""Phonetic-context decision trees: which pdf (tied state) each HMM state of a phone in context uses.

Kaldi's ``ContextDependency`` (context width ``N``, central position ``P`` and an event map), in Python:
a context window is ``N`` phone ids (``lang.phone_to_id``; 0 = no phone, at an utterance start or end,
as ``kaldifst.compose_context`` writes it) whose phone at position ``P`` is the one being modelled.

The tree has one root per (central phone, HMM state): states of different phones or positions are never
tied together (Kaldi's ``roots.txt`` with one phone per root, split on the HMM state first). Every
internal node asks "is the phone at window position ``pos`` in the set ``S``?"; leaves are pdf ids. Two
leaves may hold the same pdf id (leaves merged after splitting), but never across roots, so every pdf
belongs to one (phone, state): :attr:`ContextDependency.pdf_phone` / :attr:`pdf_state`.

File format (``tree.json``)::

    {"format": "asr_kd.tree/1", "context_width": 3, "central_position": 1, "num_pdfs": 412,
     "roots": [{"phone": 7, "state": 0, "node": NODE}, ...],
     "pdf_phone": [...], "pdf_state": [...], "info": {...}}

where ``NODE`` is a pdf id (int) or ``{"pos": 0, "set": [phone ids], "yes": NODE, "no": NODE}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asr_kd.utils import read_json, write_json

if TYPE_CHECKING:
    from asr_kd.data.lang import Lang

FORMAT = "asr_kd.tree/1"


class TreeFileError(ValueError):
    """A tree file is missing, unreadable or inconsistent."""


class Question:
    """An internal node: ``window[pos] in phones`` -> ``yes`` else ``no`` (each a Question or a pdf id)."""

    __slots__ = ("no", "phones", "pos", "yes")

    def __init__(self, pos: int, phones: Sequence[int], yes: Node, no: Node) -> None:
        self.pos, self.phones, self.yes, self.no = (
            int(pos),
            frozenset(int(p) for p in phones),
            yes,
            no,
        )

    def to_json(self) -> dict:
        return {
            "pos": self.pos,
            "set": sorted(self.phones),
            "yes": _node_json(self.yes),
            "no": _node_json(self.no),
        }


Node = Any  # int (pdf id) | Question


def _node_json(node: Node):
    return node.to_json() if isinstance(node, Question) else int(node)


def _node_from_json(obj) -> Node:
    if isinstance(obj, int):
        return obj
    return Question(
        obj["pos"], obj["set"], _node_from_json(obj["yes"]), _node_from_json(obj["no"])
    )


def _leaves(node: Node) -> list[int]:
    if isinstance(node, Question):
        return _leaves(node.yes) + _leaves(node.no)
    return [node]


class ContextDependency:
    """Kaldi's ContextDependency: ``pdf(window, hmm_state)`` for windows of ``context_width`` phones."""

    def __init__(
        self,
        context_width: int,
        central_position: int,
        roots: dict[tuple[int, int], Node],
        info: dict | None = None,
    ) -> None:
        if not 0 <= central_position < context_width:
            raise ValueError(
                f"central_position {central_position} outside a window of {context_width}"
            )
        self.context_width, self.central_position = (
            int(context_width),
            int(central_position),
        )
        self.roots = dict(roots)
        self.info = dict(info or {})
        pdfs: dict[int, tuple[int, int]] = {}
        for (phone, state), node in self.roots.items():
            for pdf in _leaves(node):
                if pdfs.setdefault(pdf, (phone, state)) != (phone, state):
                    raise ValueError(
                        f"pdf {pdf} is a leaf of both {pdfs[pdf]} and {(phone, state)}"
                    )
        self.num_pdfs = len(pdfs)
        if sorted(pdfs) != list(range(self.num_pdfs)):
            raise ValueError(
                f"the leaves must be the pdf ids 0..{self.num_pdfs - 1}, got {sorted(pdfs)[:10]}..."
            )
        self.pdf_phone = [
            pdfs[p][0] for p in range(self.num_pdfs)
        ]  #: central phone id of each pdf
        self.pdf_state = [
            pdfs[p][1] for p in range(self.num_pdfs)
        ]  #: HMM state of each pdf

    def pdf(self, window: Sequence[int], hmm_state: int) -> int:
        """The pdf id of HMM state ``hmm_state`` of the central phone of ``window`` (length N)."""
        if len(window) != self.context_width:
            raise ValueError(
                f"window {list(window)} must have {self.context_width} phones"
            )
        key = (int(window[self.central_position]), int(hmm_state))
        node = self.roots.get(key)
        if node is None:
            raise KeyError(
                f"the tree has no root for phone {key[0]}, HMM state {key[1]}"
            )
        while isinstance(node, Question):
            node = node.yes if window[node.pos] in node.phones else node.no
        return node

    def num_leaves(self) -> int:
        """Tree leaves (>= num_pdfs when leaves were merged)."""
        return sum(len(_leaves(n)) for n in self.roots.values())

    @classmethod
    def monophone(cls, lang: Lang) -> ContextDependency:
        """N = 1: the pdf of (phone, state) is ``lang.pdf_ids(phone)[state]`` (the lang's own pdfs)."""
        roots = {
            (lang.phone_to_id[p], s): pdf
            for p in lang.phones
            for s, pdf in enumerate(lang.pdf_ids(p))
        }
        return cls(1, 0, roots, {"kind": "monophone"})

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "context_width": self.context_width, "central_position": self.central_position,
            "num_pdfs": self.num_pdfs,
            "roots": [{"phone": p, "state": s, "node": _node_json(n)} for (p, s), n in sorted(self.roots.items())],
            "pdf_phone": self.pdf_phone, "pdf_state": self.pdf_state, "info": self.info,
        }  # fmt: skip

    @classmethod
    def from_json(cls, obj: dict, source: str = "tree") -> ContextDependency:
        try:
            if obj.get("format") != FORMAT:
                raise ValueError(f"format {obj.get('format')!r}, expected {FORMAT!r}")
            roots = {
                (int(r["phone"]), int(r["state"])): _node_from_json(r["node"])
                for r in obj["roots"]
            }
            tree = cls(
                obj["context_width"], obj["central_position"], roots, obj.get("info")
            )
            if tree.num_pdfs != obj["num_pdfs"]:
                raise ValueError(
                    f"num_pdfs {obj['num_pdfs']} but the leaves give {tree.num_pdfs}"
                )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TreeFileError(
                f"{source}: not a valid tree ({e}); rerun `asr-kd align`"
            ) from e
        return tree

    def save(self, path: Path | str) -> None:
        """Write ``tree.json`` atomically (tmp + rename)."""
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> ContextDependency:
        """Read a tree written by :meth:`save`; :class:`TreeFileError` naming the file on a bad one."""
        try:
            obj = read_json(path, "a tree", "rerun `asr-kd align`")
        except ValueError as e:
            raise TreeFileError(str(e)) from e
        return cls.from_json(obj, str(path))
