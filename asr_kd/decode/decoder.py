"""Hybrid (DNN-HMM or GMM-HMM) decoding over HCLG with kaldi-decoder's FasterDecoder (Kaldi's
decode-faster-mapped).

Usage:
    from asr_kd.decode.decoder import compute_log_priors, hybrid_loglikes, decode_batch, search_batch
    log_priors = compute_log_priors(pdf_counts)                     # from the training alignments
    loglikes = hybrid_loglikes(log_posteriors, log_priors)          # (T, num_pdfs), per utterance
    word_ids = decode_utterance(graph, loglikes, acoustic_scale=0.1)
    hyps = decode_batch("data/lang/HCLG-<key>.fst", loglikes_list, num_jobs=8)
    hyps = search_batch(graph_path, loglikes_list, num_jobs=8, acoustic_scale=0.5)  # Hypothesis per utt

The search maximises ``acoustic_scale * sum_t loglikes[t, s_t] - graph_cost``; kaldi-decoder's
``DecodableCtc(matrix)`` returns ``matrix[t, ilabel - 1]`` and applies no scale, so the matrix is scaled
here (and widened by the graph's extra label columns, :func:`asr_kd.decode.context.label_columns`).

Search settings (:func:`search_utterance`, the decode stage's): the beam is given in scaled log units at
the reference acoustic scale 0.1 (Kaldi's acwt) and, with ``scale_beam`` (default), grows with the scale
above it: ``beam * max(1, acoustic_scale / 0.1)``. A tuned scale of 1.0 multiplies every acoustic score
difference by 10 and a fixed beam would then prune the path to any final state of many utterances; the
scaled beam keeps the pruning the same relative to the acoustic scores. An utterance that still ends
without a final state is decoded again with the beam doubled, up to ``max_retries`` times; the
:class:`Hypothesis` says how many retries it took and whether a final state was reached in the end (if
not, the best partial path is used). ``decoder="lattice"`` runs kaldi-decoder's LatticeSimpleDecoder
(Kaldi's decode-simple / lattice generation; its best path) instead of the FasterDecoder.

kaldi-decoder holds the GIL: :func:`search_batch` decodes in ``spawn`` worker processes that each
read the graph file once (kaldifst FSTs cannot be pickled) and receive the matrices by pickle.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np

from asr_kd.decode.context import label_columns

DEFAULT_BEAM = 13.0  #: Kaldi's decode.sh --beam
DEFAULT_MAX_ACTIVE = 7000  #: Kaldi's decode.sh --max-active
DEFAULT_MIN_ACTIVE = 20  #: Kaldi's FasterDecoder --min-active
DEFAULT_ACOUSTIC_SCALE = 0.1  #: Kaldi's --acwt for DNN-HMM systems
DEFAULT_PRIOR_FLOOR = 1e-8  #: smallest prior probability of a pdf seen in the alignments
#: log prior of a pdf with no frame in the alignments: its hybrid score is about -1e30, so no path uses it
#: (Kaldi nnet1's PdfPrior does the same below --prior-cutoff). A finite value, so that no NaN appears.
UNSEEN_LOG_PRIOR = 1e30
REFERENCE_ACOUSTIC_SCALE = 0.1  #: the scale at which the beam is given (module docstring)
DEFAULT_MAX_RETRIES = 2  #: searches again, beam doubled each time, when no final state is reached


def compute_log_priors(pdf_counts: np.ndarray, floor: float = DEFAULT_PRIOR_FLOOR) -> np.ndarray:
    """Log prior of each pdf from its frame count in the training alignments.

    A pdf with no frames (e.g. the ``SPN`` states of a corpus without OOV words) gets ``UNSEEN_LOG_PRIOR``:
    the model never learnt it, and dividing its small posterior by a floored prior would make it the best
    score of every frame (a whole utterance decoded as one ``<UNK>``).

    Args:
        pdf_counts: (num_pdfs,) non-negative frame counts (e.g. ``np.bincount(labels, minlength=num_pdfs)``).
        floor: smallest prior probability of a seen pdf; then renormalized over the seen pdfs.

    Returns:
        (num_pdfs,) float32 natural-log priors (``UNSEEN_LOG_PRIOR`` for the unseen pdfs).
    """
    counts = np.asarray(pdf_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"pdf_counts must be a non-empty 1-D array of counts with a positive sum, "
                         f"got shape {counts.shape} and sum {counts.sum() if counts.size else 0}")
    seen = counts > 0
    priors = np.where(seen, np.maximum(counts / counts.sum(), floor), 1.0)
    log_priors = np.log(priors / priors[seen].sum())
    log_priors[~seen] = UNSEEN_LOG_PRIOR
    return log_priors.astype(np.float32)


def hybrid_loglikes(log_posteriors: np.ndarray, log_priors: np.ndarray) -> np.ndarray:
    """Scaled-likelihood pseudo log-likelihoods ``log p(s|x) - log prior(s)``.

    Args:
        log_posteriors: (T, num_pdfs) natural-log posteriors (log_softmax of the model's outputs).
        log_priors: (num_pdfs,) from :func:`compute_log_priors`.

    Returns:
        (T, num_pdfs) float32.
    """
    log_posteriors = np.asarray(log_posteriors, dtype=np.float32)
    log_priors = np.asarray(log_priors, dtype=np.float32)
    if log_posteriors.ndim != 2 or log_priors.shape != (log_posteriors.shape[1],):
        raise ValueError(f"log_posteriors must be (T, num_pdfs) and log_priors (num_pdfs,), got "
                         f"{log_posteriors.shape} and {log_priors.shape}")
    return log_posteriors - log_priors[None, :]


def search_beam(beam: float, acoustic_scale: float, scale_beam: bool = True) -> float:
    """The beam of the search in scaled log units (module docstring)."""
    return beam * max(1.0, acoustic_scale / REFERENCE_ACOUSTIC_SCALE) if scale_beam else beam


@dataclass
class Hypothesis:
    """The result of searching one utterance."""

    word_ids: list[int]  #: words.txt ids of the best path (of the best partial path without a final state)
    reached_final: bool  #: a final state of the graph was reached (always True for an empty matrix)
    retries: int = 0  #: searches again with a doubled beam after ending without a final state


def _search_once(graph, scaled: np.ndarray, beam: float, max_active: int, min_active: int,
                 decoder: str) -> tuple[bool, list[int] | None]:  # fmt: skip
    """(reached final, word ids or None when no path survived) of one search over a scaled matrix."""
    import kaldi_decoder
    import kaldifst

    if decoder == "faster":
        options = kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=int(max_active),
                                                     min_active=int(min_active))  # fmt: skip
        search = kaldi_decoder.FasterDecoder(graph, options)
        search.decode(kaldi_decoder.DecodableCtc(scaled))
        reached_final = search.reached_final()
        ok, lattice = search.get_best_path(use_final_probs=reached_final)
    elif decoder == "lattice":
        search = kaldi_decoder.LatticeSimpleDecoder(graph, kaldi_decoder.LatticeSimpleDecoderConfig(beam=beam))
        search.decode(kaldi_decoder.DecodableCtc(scaled))
        reached_final = math.isfinite(search.final_relative_cost())
        ok, lattice = search.get_best_path(use_final_probs=True)  # no final state: every state counts as final
    else:
        raise ValueError(f"decoder must be 'faster' or 'lattice', got {decoder!r}")
    if not ok:
        return reached_final, None
    ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(lattice)
    if not ok:  # pragma: no cover - GetBestPath returns a linear FST
        raise RuntimeError("the best path is not linear")
    return reached_final, [int(w) for w in olabels if w != 0]


def search_utterance(graph, loglikes: np.ndarray, beam: float = DEFAULT_BEAM, max_active: int = DEFAULT_MAX_ACTIVE,
                     acoustic_scale: float = DEFAULT_ACOUSTIC_SCALE, scale_beam: bool = True,
                     max_retries: int = DEFAULT_MAX_RETRIES, extra_pdfs: Sequence[int] = (),
                     decoder: str = "faster", min_active: int = DEFAULT_MIN_ACTIVE) -> Hypothesis:  # fmt: skip
    """The best word sequence of one utterance, with the search settings of the module docstring.

    Args:
        graph: HCLG (``kaldifst.StdVectorFst``, input labels pdf id + 1, output labels word ids).
        loglikes: (T, num_pdfs) log-likelihoods, e.g. :func:`hybrid_loglikes` (unscaled).
        beam: search beam in scaled log units (at the reference scale 0.1 when ``scale_beam``).
        max_active: most active states per frame (FasterDecoder only).
        acoustic_scale: multiplies ``loglikes``.
        scale_beam: widen the beam with the scale above 0.1.
        max_retries: searches again with the beam doubled when no final state is reached.
        extra_pdfs: the pdfs of the graph's input labels above num_pdfs (``graph_label_pdfs``).
        decoder: ``"faster"`` (FasterDecoder) or ``"lattice"`` (LatticeSimpleDecoder's best path).
        min_active: fewest active states per frame (FasterDecoder only; the beam widens to keep them).
    """
    loglikes = np.asarray(loglikes)
    if loglikes.ndim != 2:
        raise ValueError(f"loglikes must be (T, num_pdfs), got shape {loglikes.shape}")
    if loglikes.shape[0] == 0:
        return Hypothesis([], True)
    loglikes = label_columns(loglikes, extra_pdfs)
    scaled = np.ascontiguousarray(loglikes * acoustic_scale, dtype=np.float32)
    width = search_beam(beam, acoustic_scale, scale_beam)
    best: list[int] | None = None
    for retry in range(max_retries + 1):
        reached_final, words = _search_once(graph, scaled, width * 2**retry, max_active, min_active, decoder)
        best = words if words is not None else best
        if reached_final:
            return Hypothesis(words or [], True, retry)
    logging.warning(f"no final state reached in {loglikes.shape[0]} frames (beam {width:g}, {max_retries} retries): "
                    f"using the best partial path")  # fmt: skip
    if best is None:
        logging.warning(f"no path survived the search ({loglikes.shape[0]} frames): empty hypothesis")
    return Hypothesis(best or [], False, max_retries)


def decode_utterance(graph, loglikes: np.ndarray, beam: float = DEFAULT_BEAM,
                     max_active: int = DEFAULT_MAX_ACTIVE,
                     acoustic_scale: float = DEFAULT_ACOUSTIC_SCALE) -> list[int]:
    """The word ids of the best path of one utterance with a fixed beam and no retry
    (:func:`search_utterance` with ``scale_beam=False, max_retries=0``); of the best partial path when no
    final state is reached (logged as a warning); [] for an empty matrix."""
    return search_utterance(graph, loglikes, beam, max_active, acoustic_scale, scale_beam=False,
                            max_retries=0).word_ids


_WORKER_GRAPH: dict[tuple[str, float], object] = {}  #: (graph path, word penalty) -> graph, per worker process


def with_word_penalty(graph, penalty: float, num_words: int | None = None):
    """``graph`` with ``penalty`` added to the cost of every word it outputs (Kaldi's word insertion
    penalty, ``lattice-add-penalty --word-ins-penalty``, here in the graph: cost units, not scaled by the
    acoustic scale). Composes ``graph`` with a one-state acceptor of every word at cost ``penalty``;
    epsilon outputs pass unchanged, so the states and paths stay those of ``graph``.

    ``num_words``: one more than the largest word id (default: the graph's largest output label + 1).
    """
    import kaldifst

    graph = graph.copy()
    kaldifst.arcsort(graph, sort_type="olabel")
    if num_words is None:
        num_words = 1 + max((arc.olabel for s in range(graph.num_states) for arc in kaldifst.ArcIterator(graph, s)),
                            default=0)  # fmt: skip
    words = kaldifst.StdVectorFst()
    state = words.add_state()
    words.start = state
    words.set_final(state, 0.0)
    for w in range(1, num_words):
        words.add_arc(state, kaldifst.StdArc(w, w, float(penalty), state))
    out = kaldifst.StdVectorFst(kaldifst.compose(graph, words))
    kaldifst.arcsort(out, sort_type="ilabel")
    return out


def _search_chunk(graph_path: str, loglikes_list: list[np.ndarray], options: dict) -> list[Hypothesis]:
    """Worker: search a chunk of utterances over the graph file (read once per process)."""
    import kaldifst

    if not logging.getLogger().handlers:  # a spawned worker: log in the project's format
        from asr_kd.utils import setup_logging

        setup_logging(level=logging.WARNING)

    options = dict(options)
    penalty = float(options.pop("word_penalty", 0.0))
    key = (graph_path, penalty)
    if key not in _WORKER_GRAPH:
        plain = _WORKER_GRAPH.get((graph_path, 0.0))
        if plain is None:
            plain = kaldifst.StdVectorFst.read(graph_path)
        _WORKER_GRAPH.clear()
        _WORKER_GRAPH[(graph_path, 0.0)] = plain
        if penalty != 0.0:
            _WORKER_GRAPH[key] = with_word_penalty(plain, penalty)
    graph = _WORKER_GRAPH[key]
    return [search_utterance(graph, m, **options) for m in loglikes_list]


def search_batch(graph_path: Path | str, loglikes_list: Sequence[np.ndarray], num_jobs: int = 1,
                 chunks_per_job: int = 4, **options) -> list[Hypothesis]:
    """:func:`search_utterance` on many utterances, in ``num_jobs`` spawned processes.

    Args:
        graph_path: HCLG on disk (each worker reads it once).
        loglikes_list: (T_i, num_pdfs) matrices.
        num_jobs: worker processes; 1 decodes here. The result does not depend on it.
        options: the keyword arguments of :func:`search_utterance` (beam, acoustic_scale, ...), and
            ``word_penalty`` (:func:`with_word_penalty`; 0: the graph as it is).

    Returns:
        One :class:`Hypothesis` per utterance, in input order.
    """
    if num_jobs < 1:
        raise ValueError(f"num_jobs must be >= 1, got {num_jobs}")
    graph_path = str(graph_path)
    if not Path(graph_path).is_file():
        raise FileNotFoundError(f"decoding graph {graph_path} does not exist; build it with build_decoding_graph")
    num_chunks = min(len(loglikes_list), num_jobs * max(1, chunks_per_job))
    if num_jobs == 1 or num_chunks <= 1:
        return _search_chunk(graph_path, [np.asarray(m) for m in loglikes_list], options)
    bounds = [round(k * len(loglikes_list) / num_chunks) for k in range(num_chunks + 1)]
    with ProcessPoolExecutor(max_workers=num_jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_search_chunk, graph_path,
                               [np.asarray(m, dtype=np.float32) for m in loglikes_list[b:e]], options)
                   for b, e in zip(bounds[:-1], bounds[1:])]
        return [hyp for future in futures for hyp in future.result()]


def decode_batch(graph_path: Path | str, loglikes_list: Sequence[np.ndarray], num_jobs: int = 1,
                 beam: float = DEFAULT_BEAM, max_active: int = DEFAULT_MAX_ACTIVE,
                 acoustic_scale: float = DEFAULT_ACOUSTIC_SCALE, chunks_per_job: int = 4) -> list[list[int]]:
    """:func:`decode_utterance` (fixed beam, no retry) on many utterances: word ids per utterance, in input
    order (:func:`search_batch`)."""
    hyps = search_batch(graph_path, loglikes_list, num_jobs, chunks_per_job, beam=beam, max_active=max_active,
                        acoustic_scale=acoustic_scale, scale_beam=False, max_retries=0)  # fmt: skip
    return [h.word_ids for h in hyps]
