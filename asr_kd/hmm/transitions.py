"""HMM transition probabilities per (phone, HMM state), re-estimated from alignments.

Kaldi's TransitionModel with one self-loop and one forward transition per emitting state of the lang
topology (``lang.topology``). :meth:`TransitionModel.from_lang` gives the topology's fixed initial
probabilities; :meth:`TransitionModel.estimate` the ML estimate from frame alignments (Kaldi's
``MleTransitionUpdate``: states with fewer than ``min_count`` visits keep their probabilities; each
probability is floored at ``floor``).

File format (``transitions.json``)::

    {"format": "asr_kd.transitions/1", "entries": [{"phone": 7, "state": 0, "self_loop": 0.74}, ...]}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asr_kd.utils import read_json, write_json

if TYPE_CHECKING:
    from asr_kd.data.lang import Lang

FORMAT = "asr_kd.transitions/1"
MIN_COUNT = 5.0  #: Kaldi's --transition-min-count
FLOOR = 0.01  #: Kaldi's --transition-floor


class TransitionModel:
    """Self-loop probability of every (phone id, HMM state); forward = 1 - self-loop."""

    def __init__(self, self_loop: dict[tuple[int, int], float]) -> None:
        for key, p in self_loop.items():
            if not 0.0 < p < 1.0:
                raise ValueError(
                    f"self-loop probability of (phone, state) {key} must be in (0, 1), got {p}"
                )
        self.self_loop = {
            (int(k[0]), int(k[1])): float(p) for k, p in self_loop.items()
        }

    def log_probs(self, phone: int, hmm_state: int) -> tuple[float, float]:
        """(self-loop, forward) natural-log probabilities of ``hmm_state`` of ``phone``."""
        p = self.self_loop[(int(phone), int(hmm_state))]
        return math.log(p), math.log1p(-p)

    def log_prob_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(self-loop, forward) natural-log probabilities as ``(max phone id + 1, max state + 1)`` float64
        arrays indexed by [phone id, HMM state] (-inf where the model has no such state)."""
        keys = np.array(list(self.self_loop), dtype=np.int64).reshape(-1, 2)
        p = np.array(list(self.self_loop.values()), dtype=np.float64)
        shape = (int(keys[:, 0].max(initial=0)) + 1, int(keys[:, 1].max(initial=0)) + 1)
        self_loop, forward = np.full(shape, -np.inf), np.full(shape, -np.inf)
        self_loop[keys[:, 0], keys[:, 1]] = np.log(p)
        forward[keys[:, 0], keys[:, 1]] = np.log1p(-p)
        return self_loop, forward

    @classmethod
    def from_lang(cls, lang: Lang) -> TransitionModel:
        """The lang topology's fixed probabilities."""
        return cls(
            {
                (lang.phone_to_id[ph], s): p
                for ph in lang.phones
                for s, p in enumerate(lang.topology[ph])
            }
        )

    def estimate(
        self,
        state_sequences: Iterable[tuple[Sequence[int], Sequence[int]]],
        min_count: float = MIN_COUNT,
        floor: float = FLOOR,
    ) -> TransitionModel:
        """A new model from aligned (phone id per frame, HMM state per frame) sequences.

        Each visit of a state ends with one forward transition; its other frames are self-loops. Phone
        instances are separated where the phone changes or the state goes back.
        """
        frames: dict[tuple[int, int], float] = {}
        visits: dict[tuple[int, int], float] = {}
        for phones, states in state_sequences:
            phones, states = np.asarray(phones, np.int64), np.asarray(states, np.int64)
            if len(phones) == 0:
                continue
            change = np.ones(len(phones), dtype=bool)
            change[1:] = (phones[1:] != phones[:-1]) | (states[1:] != states[:-1])
            keys, n = np.unique(
                np.stack([phones, states], 1), axis=0, return_counts=True
            )
            for (ph, st), c in zip(keys.tolist(), n.tolist()):
                frames[(ph, st)] = frames.get((ph, st), 0.0) + c
            keys, n = np.unique(
                np.stack([phones[change], states[change]], 1),
                axis=0,
                return_counts=True,
            )
            for (ph, st), c in zip(keys.tolist(), n.tolist()):
                visits[(ph, st)] = visits.get((ph, st), 0.0) + c
        new = dict(self.self_loop)
        for key in new:
            if visits.get(key, 0.0) >= min_count:
                p = (frames[key] - visits[key]) / frames[key]
                new[key] = min(max(p, floor), 1.0 - floor)
        return TransitionModel(new)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "entries": [
                {"phone": p, "state": s, "self_loop": v}
                for (p, s), v in sorted(self.self_loop.items())
            ],
        }

    @classmethod
    def from_json(cls, obj: dict, source: str = "transitions") -> TransitionModel:
        try:
            if obj.get("format") != FORMAT:
                raise ValueError(f"format {obj.get('format')!r}, expected {FORMAT!r}")
            return cls(
                {(e["phone"], e["state"]): e["self_loop"] for e in obj["entries"]}
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(
                f"{source}: not a valid transition model ({e}); rerun `asr-kd align`"
            ) from e

    def save(self, path: Path | str) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> TransitionModel:
        obj = read_json(path, "a transition model", "rerun `asr-kd align`")
        return cls.from_json(obj, str(path))
