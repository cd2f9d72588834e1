"""Hybrid DNN-HMM decoding over HCLG with kaldi-decoder's FasterDecoder (Kaldi's decode-faster-mapped).

Usage:
    from asr_kd.decode.decoder import compute_log_priors, hybrid_loglikes, decode_batch
    log_priors = compute_log_priors(pdf_counts)                     # from the training alignments
    loglikes = hybrid_loglikes(log_posteriors, log_priors)          # (T, num_pdfs), per utterance
    word_ids = decode_utterance(graph, loglikes, acoustic_scale=0.1)
    hyps = decode_batch("data/lang/HCLG.fst", loglikes_list, num_jobs=8)

The search maximises ``acoustic_scale * sum_t loglikes[t, s_t] - graph_cost``; kaldi-decoder's
``DecodableCtc(matrix)`` returns ``matrix[t, ilabel - 1]`` and applies no scale, so the matrix is scaled
here. kaldi-decoder holds the GIL: :func:`decode_batch` decodes in ``spawn`` worker processes that each
read the graph file once (kaldifst FSTs cannot be pickled) and receive the matrices by pickle.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_BEAM = 13.0  #: Kaldi's decode.sh --beam
DEFAULT_MAX_ACTIVE = 7000  #: Kaldi's decode.sh --max-active
DEFAULT_ACOUSTIC_SCALE = 0.1  #: Kaldi's --acwt for DNN-HMM systems
DEFAULT_PRIOR_FLOOR = 1e-8  #: smallest prior probability (pdfs never seen in the alignments)


def compute_log_priors(pdf_counts: np.ndarray, floor: float = DEFAULT_PRIOR_FLOOR) -> np.ndarray:
    """Log prior of each pdf from its frame count in the training alignments.

    Args:
        pdf_counts: (num_pdfs,) non-negative frame counts (e.g. ``np.bincount(labels, minlength=num_pdfs)``).
        floor: smallest prior probability (pdfs with no frames get it); then renormalized.

    Returns:
        (num_pdfs,) float32 natural-log priors.
    """
    counts = np.asarray(pdf_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"pdf_counts must be a non-empty 1-D array of counts with a positive sum, "
                         f"got shape {counts.shape} and sum {counts.sum() if counts.size else 0}")
    priors = np.maximum(counts / counts.sum(), floor)
    return np.log(priors / priors.sum()).astype(np.float32)


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


def decode_utterance(graph, loglikes: np.ndarray, beam: float = DEFAULT_BEAM,
                     max_active: int = DEFAULT_MAX_ACTIVE,
                     acoustic_scale: float = DEFAULT_ACOUSTIC_SCALE) -> list[int]:
    """The best word sequence of one utterance.

    Args:
        graph: HCLG (``kaldifst.StdVectorFst``, input labels pdf id + 1, output labels word ids).
        loglikes: (T, num_pdfs) log-likelihoods, e.g. :func:`hybrid_loglikes` (unscaled).
        beam: search beam in scaled log units.
        max_active: most active states per frame.
        acoustic_scale: multiplies ``loglikes``.

    Returns:
        Word ids (words.txt) of the best path; when no final state is reached, of the best partial path
        (logged as a warning); [] for an empty matrix.
    """
    import kaldi_decoder
    import kaldifst

    loglikes = np.asarray(loglikes)
    if loglikes.ndim != 2:
        raise ValueError(f"loglikes must be (T, num_pdfs), got shape {loglikes.shape}")
    if loglikes.shape[0] == 0:
        return []
    scaled = np.ascontiguousarray(loglikes * acoustic_scale, dtype=np.float32)
    options = kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=int(max_active))
    decoder = kaldi_decoder.FasterDecoder(graph, options)
    decoder.decode(kaldi_decoder.DecodableCtc(scaled))
    reached_final = decoder.reached_final()
    if not reached_final:
        logging.warning(f"no final state reached in {loglikes.shape[0]} frames: using the best partial path")
    ok, lattice = decoder.get_best_path(use_final_probs=reached_final)
    if not ok:
        logging.warning(f"no path survived the search ({loglikes.shape[0]} frames): empty hypothesis")
        return []
    ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(lattice)
    if not ok:  # pragma: no cover - GetBestPath returns a linear FST
        raise RuntimeError("the best path is not linear")
    return [int(w) for w in olabels if w != 0]


_WORKER_GRAPH: dict[str, object] = {}  #: graph path -> graph, per worker process


def _decode_chunk(graph_path: str, loglikes_list: list[np.ndarray], beam: float, max_active: int,
                  acoustic_scale: float) -> list[list[int]]:
    """Worker: decode a chunk of utterances over the graph file (read once per process)."""
    import kaldifst

    if not logging.getLogger().handlers:  # a spawned worker: log in the project's format
        from asr_kd.utils import setup_logging

        setup_logging(level=logging.WARNING)

    if graph_path not in _WORKER_GRAPH:
        _WORKER_GRAPH.clear()
        _WORKER_GRAPH[graph_path] = kaldifst.StdVectorFst.read(graph_path)
    graph = _WORKER_GRAPH[graph_path]
    return [decode_utterance(graph, m, beam, max_active, acoustic_scale) for m in loglikes_list]


def decode_batch(graph_path: Path | str, loglikes_list: Sequence[np.ndarray], num_jobs: int = 1,
                 beam: float = DEFAULT_BEAM, max_active: int = DEFAULT_MAX_ACTIVE,
                 acoustic_scale: float = DEFAULT_ACOUSTIC_SCALE, chunks_per_job: int = 4) -> list[list[int]]:
    """:func:`decode_utterance` on many utterances, in ``num_jobs`` spawned processes.

    Args:
        graph_path: HCLG.fst on disk (each worker reads it once).
        loglikes_list: (T_i, num_pdfs) matrices.
        num_jobs: worker processes; 1 decodes here. The result does not depend on it.

    Returns:
        Word ids per utterance, in input order.
    """
    if num_jobs < 1:
        raise ValueError(f"num_jobs must be >= 1, got {num_jobs}")
    graph_path = str(graph_path)
    if not Path(graph_path).is_file():
        raise FileNotFoundError(f"decoding graph {graph_path} does not exist; build it with build_decoding_graph")
    num_chunks = min(len(loglikes_list), num_jobs * max(1, chunks_per_job))
    options = (beam, max_active, acoustic_scale)
    if num_jobs == 1 or num_chunks <= 1:
        return _decode_chunk(graph_path, [np.asarray(m) for m in loglikes_list], *options)
    bounds = [round(k * len(loglikes_list) / num_chunks) for k in range(num_chunks + 1)]
    with ProcessPoolExecutor(max_workers=num_jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_decode_chunk, graph_path,
                               [np.asarray(m, dtype=np.float32) for m in loglikes_list[b:e]], *options)
                   for b, e in zip(bounds[:-1], bounds[1:])]
        return [hyp for future in futures for hyp in future.result()]
