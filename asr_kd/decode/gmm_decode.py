"""Decode with a GMM-HMM system (the aligner's) through the decode stage's search: the ladder of Kaldi's
RESULTS files (mono, tri1, tri2 WER, then the neural models).

Usage:
    asr-kd decode-gmm --gmm exp/my_recipe/align/tri1.gmm.pt --cuts data/ali/my_corpus_cuts_test.jsonl.gz \\
        --lang-dir data/lang --lm-cuts data/ali/my_corpus_cuts_train.jsonl.gz \\
        --output-dir exp/my_recipe/decode --name tri1 --tune-cuts data/ali/my_corpus_cuts_dev.jsonl.gz

    from asr_kd.decode.gmm_decode import decode_gmm
    record = decode_gmm("exp/my_recipe/align/final.gmm.pt", "data/ali/my_corpus_cuts_test.jsonl.gz",
                        "data/lang", "exp/my_recipe/decode", "mono", lm_cuts="data/ali/my_corpus_cuts_train.jsonl.gz")

The decodable matrix of a cut is the system's per-frame GMM log-likelihoods of every pdf (Kaldi's
gmm-decode-faster: no priors, the acoustic scale applies to them as to the hybrid scores); the graph is the
HCLG of the system's own tree and transitions (:mod:`asr_kd.decode.graph`). Everything else (tuning on
development cuts, retries, files, the record with role ``gmm``) is the decode stage's
(:mod:`asr_kd.decode.run`). The frame accuracy is that of the arg-max pdf against the cuts' frame labels.

Systems: ``asr_kd.hmm.system.GmmSystem.load(path)`` (the align stage's ``<pass>.gmm.pt`` and
``final.gmm.pt``: GMM, feature transform, tree, transitions, refused for another lang); an older
monophone aligner's file (``{"gmm", "config", "num_pdfs"}``: a :class:`~asr_kd.align.gmm.DiagGmm` over
:func:`~asr_kd.align.feats.gmm_features`, the lang's pdfs and transitions) is read as
:class:`MonophoneGmmSystem`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from asr_kd.decode.decoder import DEFAULT_BEAM, DEFAULT_MAX_ACTIVE, DEFAULT_MAX_RETRIES
from asr_kd.decode.record import summary_line
from asr_kd.decode.run import (
    DEFAULT_TUNE_SCALES,
    _reusable,
    _Scorer,
    decode_and_record,
    decoding_graph,
    search_config,
    search_settings,
)

#: Kaldi's decode.sh --acwt for GMM systems (1/12; its LM weights 7-17 are scales 1/17-1/7)
DEFAULT_GMM_ACOUSTIC_SCALE = 1.0 / 12


class MonophoneGmmSystem:
    """The monophone aligner's final model in the GmmSystem protocol (tree and transitions: the lang's)."""

    tree = None
    transitions = None

    def __init__(self, gmm, path: Path) -> None:
        self.gmm, self.path = gmm, path

    @property
    def num_pdfs(self) -> int:
        return self.gmm.num_pdfs

    @property
    def num_params(self) -> int:
        """Weights, means and variances of the Gaussians in use."""
        return int(self.gmm.num_gauss_per_pdf.sum()) * (2 * self.gmm.dim + 1)

    @torch.no_grad()
    def log_likelihoods(self, feats: torch.Tensor) -> torch.Tensor:
        """(T, num_pdfs) GMM log-likelihoods of one utterance's raw fbank ``(T, F)``."""
        from asr_kd.align.feats import gmm_features

        return self.gmm.log_likelihoods(gmm_features(feats.float())).float()


def load_gmm_system(path: Path | str, lang=None):
    """The GMM system in ``path`` (module docstring); clear errors naming the file. With ``lang``, a
    ``GmmSystem`` built for another lang is refused (``asr_kd.hmm.system.StaleSystemError``).

    Files are read with ``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts: all
    either format holds). The align stage's format is read once, by ``GmmSystem.load``; only a file that
    is not of that format is read a second time, to tell an older monophone aligner's file (which
    ``GmmSystem.load`` cannot read) from a file that is no GMM system at all.
    """
    from asr_kd.align.gmm import DiagGmm
    from asr_kd.hmm.system import FORMAT, GmmSystem, StaleSystemError, lang_sha256

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GMM system {path} does not exist: the align stage writes <exp-dir>/final.gmm.pt")
    try:
        return GmmSystem.load(path, None if lang is None else lang_sha256(lang))
    except StaleSystemError as e:
        not_a_system = e  # another lang, an unreadable file, or not of this format: which one, below
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable as tensors and plain data: GmmSystem.load's error names it
        raise not_a_system from e
    if isinstance(state, dict) and state.get("format") == FORMAT:
        raise not_a_system  # a GMM system of this format refused by GmmSystem.load (e.g. built for another lang)
    if isinstance(state, dict) and set(state) >= {"gmm", "num_pdfs"}:  # an older monophone aligner's file
        try:
            return MonophoneGmmSystem(DiagGmm.from_state_dict(state["gmm"]), path)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: field `gmm` is not a DiagGmm state ({e})") from e
    raise ValueError(f"{path}: not a GMM system (format {FORMAT!r}, asr_kd.hmm.system.GmmSystem) nor a monophone "
                     f"aligner's final.gmm.pt (fields gmm, config, num_pdfs)")  # fmt: skip


def _num_params(system) -> int:
    n = getattr(system, "num_params", None)
    if isinstance(n, int):
        return n
    gmm = getattr(system, "gmm", None)
    if gmm is not None and hasattr(gmm, "num_gauss_per_pdf"):
        return int(gmm.num_gauss_per_pdf.sum()) * (2 * gmm.dim + 1)
    return 0


def gmm_acoustic(system):
    """``batch -> (B, T, num_pdfs)`` log-likelihoods (0 on padding frames), the _Scorer's ``acoustic``."""

    def acoustic(batch: dict[str, Any]) -> torch.Tensor:
        feats, lengths = batch["features"], batch["lengths"].tolist()
        out = torch.zeros(feats.shape[0], feats.shape[1], system.num_pdfs)
        for i, n in enumerate(lengths):
            ll = torch.as_tensor(system.log_likelihoods(feats[i, :n])).float().cpu()
            if ll.shape != (n, system.num_pdfs):
                raise ValueError(f"the GMM system gave log-likelihoods of shape {tuple(ll.shape)} for {n} frames, "
                                 f"expected ({n}, {system.num_pdfs})")  # fmt: skip
            out[i, :n] = ll
        return out

    return acoustic


def decode_gmm(
    gmm: Path | str,
    cuts_path: Path | str,
    lang_dir: Path | str,
    output_dir: Path | str,
    name: str,
    *,
    role: str = "gmm",
    lm_cuts: Path | str | None = None,
    lm_text: Path | str | None = None,
    lm_order: int = 3,
    acoustic_scale: float = DEFAULT_GMM_ACOUSTIC_SCALE,
    beam: float = DEFAULT_BEAM,
    max_active: int = DEFAULT_MAX_ACTIVE,
    scale_beam: bool = True,
    max_retries: int = DEFAULT_MAX_RETRIES,
    decoder: str = "faster",
    num_jobs: int = 1,
    batch_size: int = 32,
    force: bool = False,
    tune_cuts: Path | str | None = None,
    tune_scales: Sequence[float] = DEFAULT_TUNE_SCALES,
    word_penalty: float = 0.0,
    tune_penalties: Sequence[float] = (0.0,),
    self_loop_scale: float | None = None,
) -> dict:
    """Decode every cut of ``cuts_path`` with the GMM system ``gmm``; score WER and frame accuracy.

    The arguments are those of :func:`asr_kd.decode.run.decode_cuts` (no priors, no device: the GMM runs on
    the CPU); the record is ``result-<name>.json`` with ``arch`` ``"gmm"``, ``size`` the context width
    (``"mono"`` or ``"N=3"``), ``params`` the Gaussians' parameters.
    """
    from asr_kd.data.lang import Lang
    from asr_kd.utils import file_sha256

    output_dir = Path(output_dir)
    lang = Lang.load(lang_dir)
    system = load_gmm_system(gmm, lang)
    tree, transitions = system.tree, system.transitions
    want = tree.num_pdfs if tree is not None else lang.num_pdfs
    if system.num_pdfs != want:
        raise ValueError(f"{gmm} has {system.num_pdfs} pdfs, its tree or {lang_dir} {want}")
    graph_path, graph_info = decoding_graph(lang_dir, lm_cuts, lm_order, lm_text, tree, transitions, self_loop_scale)
    search = search_settings(acoustic_scale, beam, max_active, scale_beam, max_retries, decoder, graph_info,
                             word_penalty)
    width = 1 if tree is None else tree.context_width
    decode_config = {**search_config(search, tune_cuts, tune_scales, tune_penalties), "lm_order": graph_info.get("lm_order", lm_order),
                     "self_loop_scale": graph_info.get("self_loop_scale", 1.0),
                     "num_jobs": num_jobs, "prior_floor": None, "lang_dir": str(lang_dir), "pdf_counts": None,
                     "lm_transcripts_sha256": graph_info.get("transcripts_sha256"),
                     "lm_text": None if lm_text is None else str(lm_text), "graph": graph_path.name,
                     "tree": None, "transitions": None}  # fmt: skip
    expected = {"name": name, "role": role, "test_set": str(cuts_path), "decode_config": decode_config,
                "models": [str(gmm)], "checkpoint_sha256": [file_sha256(gmm)], "temperature": None, "alpha": None,
                "train_fraction": None, "seed": None, "transfer": False, "arch": "gmm",
                "size": "mono" if width == 1 else f"N={width}"}  # fmt: skip
    old = None if force else _reusable(output_dir / f"result-{name}.json", expected)
    if old is not None:
        logging.info(f"{output_dir / f'result-{name}.json'} already done: {summary_line(old)}")
        return old
    acoustic = gmm_acoustic(system)

    def make_scorer(auto_flush: bool) -> _Scorer:
        return _Scorer([], torch.device("cpu"), None, graph_path, lang.word_symbols, dict(search), num_jobs,
                       auto_flush, acoustic=acoustic)  # fmt: skip

    return decode_and_record(make_scorer, expected, cuts_path, output_dir, name, batch_size, tune_cuts, tune_scales,
                             params=_num_params(system), tune_penalties=tune_penalties)
