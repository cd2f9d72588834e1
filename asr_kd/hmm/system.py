"""A trained GMM-HMM system: feature transform + diagonal GMMs + tree + transition model (``*.gmm.pt``).

``GmmSystem.log_likelihoods(fbank)`` takes the raw 80-dim log-mel features the cuts carry and applies
the system's own transform:

- ``{"kind": "deltas"}``: cepstra + deltas + delta-deltas (:func:`asr_kd.align.feats.gmm_features`);
- ``{"kind": "splice_lda", "context": c, "matrix": M}``: the per-utterance mean-normalised cepstra
  (the first ``NUM_CEPS`` columns of ``gmm_features``) spliced +-c frames, times ``M^T`` (LDA, then
  MLLT composed in: ``M = A_mllt ... A_mllt L``).

The file holds the GMM state, the transform, the tree and transitions (as their JSON), the pass name,
the training config and ``lang_sha256`` (:func:`lang_sha256` of the lang it was built for): loading it
for another lang is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from asr_kd.align.feats import NUM_CEPS, gmm_features
from asr_kd.align.gmm import DiagGmm
from asr_kd.hmm.lda import splice
from asr_kd.hmm.transitions import TransitionModel
from asr_kd.hmm.tree import ContextDependency
from asr_kd.utils import atomic_output

if TYPE_CHECKING:
    from asr_kd.data.lang import Lang

FORMAT = "asr_kd.gmm_system/1"


class StaleSystemError(ValueError):
    """A saved system was built for another lang directory (or is not a system file)."""


def lang_sha256(lang: Lang) -> str:
    """What a GMM system depends on in the lang: phones, topology, lexicon, config (hex SHA-256)."""
    key = {
        "phones": lang.phone_symbols,
        "topology": {p: list(t) for p, t in lang.topology.items()},
        "lexicon_sha256": lang.lexicon_sha256,
        "config": asdict(lang.config),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def transform_features(transform: dict, fbank: torch.Tensor) -> torch.Tensor:
    """The system features of one utterance's (T, 80) log-mel matrix."""
    feats = gmm_features(fbank.float())
    return transform_gmm_features(transform, feats)


def transform_gmm_features(transform: dict, feats: torch.Tensor) -> torch.Tensor:
    """The system features from ``gmm_features`` output (T, 3 * NUM_CEPS)."""
    kind = transform["kind"]
    if kind == "deltas":
        return feats
    if kind == "splice_lda":
        spliced = splice(feats[:, :NUM_CEPS].double(), int(transform["context"]))
        return (spliced @ transform["matrix"].double().T).float()
    raise ValueError(f"unknown feature transform {kind!r}")


class GmmSystem:
    """See the module docstring. ``gmm`` pdfs are ``tree``'s pdf ids."""

    def __init__(
        self,
        name: str,
        gmm: DiagGmm,
        transform: dict,
        tree: ContextDependency,
        transitions: TransitionModel,
        lang_sha256: str,
        config: dict | None = None,
    ) -> None:
        if gmm.num_pdfs != tree.num_pdfs:
            raise ValueError(
                f"the GMM has {gmm.num_pdfs} pdfs, the tree {tree.num_pdfs}"
            )
        self.name, self.gmm, self.transform, self.tree = (
            name,
            gmm,
            dict(transform),
            tree,
        )
        self.transitions, self.lang_sha256, self.config = (
            transitions,
            lang_sha256,
            dict(config or {}),
        )

    @property
    def num_pdfs(self) -> int:
        return self.tree.num_pdfs

    def features(self, fbank: torch.Tensor) -> torch.Tensor:
        return transform_features(self.transform, fbank)

    def log_likelihoods(self, feats: torch.Tensor) -> torch.Tensor:
        """(T, num_pdfs) GMM log-likelihoods of one utterance's raw (T, 80) log-mel features."""
        return self.gmm.log_likelihoods(self.features(feats).to(self.gmm.device))

    def state(self) -> dict:
        transform = {
            k: (v.cpu() if isinstance(v, torch.Tensor) else v)
            for k, v in self.transform.items()
        }
        return {
            "format": FORMAT,
            "name": self.name,
            "gmm": {k: v.cpu() for k, v in self.gmm.state_dict().items()},
            "transform": transform,
            "tree": self.tree.to_json(),
            "transitions": self.transitions.to_json(),
            "lang_sha256": self.lang_sha256,
            "config": self.config,
            "num_pdfs": self.num_pdfs,
        }

    def save(self, path: Path | str) -> None:
        """Write atomically (tmp + rename)."""
        with atomic_output(path) as tmp:
            torch.save(self.state(), tmp)

    @classmethod
    def load(
        cls,
        path: Path | str,
        expected_lang_sha256: str | None = None,
        device: torch.device | str = "cpu",
    ) -> GmmSystem:
        """Read a system; :class:`StaleSystemError` when it is not one or was built for another lang."""
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise StaleSystemError(f"{path}: cannot read a GMM system ({e})") from e
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise StaleSystemError(
                f"{path}: not a GMM system of this version (no format {FORMAT!r}); "
                "delete it and rerun `asr-kd align`"
            )
        if (
            expected_lang_sha256 is not None
            and state["lang_sha256"] != expected_lang_sha256
        ):
            raise StaleSystemError(
                f"{path} was built for another lang (lang_sha256 {state['lang_sha256'][:12]}, "
                f"this lang {expected_lang_sha256[:12]}): delete it and rerun `asr-kd align`"
            )
        gmm = DiagGmm.from_state_dict(state["gmm"], device)
        tree = ContextDependency.from_json(state["tree"], f"{path} (tree)")
        transitions = TransitionModel.from_json(
            state["transitions"], f"{path} (transitions)"
        )
        return cls(
            state["name"],
            gmm,
            state["transform"],
            tree,
            transitions,
            state["lang_sha256"],
            state["config"],
        )
