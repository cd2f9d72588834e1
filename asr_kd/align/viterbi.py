"""Viterbi forced alignment over training graphs with kaldi-decoder (Kaldi's align-compiled-mapped).

Usage:
    from asr_kd.align import utterance_graph, viterbi_align, align_batch
    graph = utterance_graph(lang, ["one", "two"])
    ali = viterbi_align(graph, loglikes)              # loglikes: (T, num_pdfs) float32, natural log
    alis = align_batch(graphs, loglikes_list, num_jobs=8)

Design of :func:`align_batch` (kaldi-decoder holds the GIL, so parallelism needs processes; kaldifst FSTs
cannot be pickled): the utterances are cut into contiguous chunks (a few per job, for load balance); the
parent writes each chunk's graphs, binary and exact, into one Kaldi table ``chunk-K.ark`` under /dev/shm
(Kaldi's ``fsts.JOB`` archives: ~15 us and ~4 kB per 5-word graph), and a worker of a ``spawn`` process
pool (no fork of a parent that may hold torch/OpenMP threads) reads its archive sequentially and aligns
the chunk's log-likelihood matrices, which travel by pickle; only the alignments come back. The pool is
kept between calls (EM re-aligns every few iterations; spawning costs ~0.1-0.2 s) and shut down at exit
or by :func:`shutdown_workers`. A script that calls it with ``num_jobs > 1`` needs the usual
``if __name__ == "__main__":`` guard (spawn re-imports the main module). Each utterance is decoded on its
own with the same options and the results are put back in input order, so the output does not depend on
``num_jobs``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import kaldi_decoder
import kaldifst
import numpy as np
from kaldifst.lib._kaldifst import _ArcIteratorLattice

DEFAULT_BEAM = 10.0  #: Kaldi's align-compiled-mapped --beam
DEFAULT_RETRY_BEAM = 40.0  #: Kaldi's --retry-beam


@dataclass
class Alignment:
    """The best path of one utterance through its training graph."""

    pdf_ids: np.ndarray  #: (T,) int32, the pdf id of every frame
    phone_ids: np.ndarray  #: (T,) int32, the phone id (``lang.phone_to_id``) each frame belongs to
    phones: list[tuple[str, int, int]]  #: (phone symbol, start frame, num frames) per phone, in order
    log_likelihood: float  #: sum over frames of ``loglikes[t, pdf_ids[t]]`` (unscaled, nats)
    graph_cost: float  #: -ln P(path | transcript): transitions and optional silences (nats)
    acoustic_scale: float = 1.0  #: the scale the search used on ``loglikes``
    retried: bool = False  #: True when only the retry beam reached the final state

    @property
    def num_frames(self) -> int:
        return len(self.pdf_ids)

    @property
    def score(self) -> float:
        """The total log-score the search maximised: ``acoustic_scale * log_likelihood - graph_cost``."""
        return self.acoustic_scale * self.log_likelihood - self.graph_cost


def _decode(graph: kaldifst.StdVectorFst, decodable: kaldi_decoder.DecodableCtc, beam: float):
    """FasterDecoder with ``beam``; the best-path lattice, or None when no final state was reached."""
    decoder = kaldi_decoder.FasterDecoder(graph, kaldi_decoder.FasterDecoderOptions(beam=beam))
    decoder.decode(decodable)
    if not decoder.reached_final():
        return None
    ok, lattice = decoder.get_best_path(use_final_probs=True)
    return lattice if ok else None


def _path_labels(lattice) -> tuple[list[int], list[int], float]:
    """Per frame of a linear best-path lattice: (ilabel, olabel); and its graph cost (nats).

    FasterDecoder's best path has epsilon arcs merged away; any left (ilabel 0) carry no frame and, in our
    graphs, no output label.
    """
    ok, _, _, weight = kaldifst.get_linear_symbol_sequence(lattice)
    if not ok:  # pragma: no cover - GetBestPath returns a linear FST
        raise RuntimeError("the best path is not linear")
    ilabels, olabels = [], []
    state = lattice.start
    while True:
        arcs = _ArcIteratorLattice(lattice, state)
        if arcs.done:
            break
        arc = arcs.value
        if arc.ilabel != 0:
            ilabels.append(arc.ilabel)
            olabels.append(arc.olabel)
        elif arc.olabel != 0:  # pragma: no cover - utterance_graph puts phone ids on frames only
            raise ValueError("the graph has an output label on an epsilon arc; build it with utterance_graph")
        state = arc.nextstate
    return ilabels, olabels, weight.value1


def viterbi_align(graph: kaldifst.StdVectorFst, loglikes: np.ndarray, beam: float = DEFAULT_BEAM,
                  retry_beam: float = DEFAULT_RETRY_BEAM, acoustic_scale: float = 1.0,
                  columns: tuple[np.ndarray, np.ndarray] | None = None) -> Alignment | None:
    """Forced alignment: the best path through ``graph`` given per-frame pdf log-likelihoods.

    Kaldi's ``align-compiled-mapped``: FasterDecoder with ``beam``; when the final state is not reached,
    once more with ``retry_beam`` (0 or <= beam: no retry).

    Args:
        graph: from :func:`asr_kd.align.graph.utterance_graph` (input labels pdf id + 1; phone symbols
            from its output symbol table, else the phone ids as text).
        loglikes: (T, num_pdfs) log-likelihoods (natural log), e.g. from the GMM or scaled DNN posteriors.
        acoustic_scale: multiplies ``loglikes`` in the search (Kaldi aligns GMMs with 0.1); beams are in
            the scaled units.
        columns: ``(column_pdf, column_cost[, column_phone_start])`` of a graph whose input label
            ``k + 1`` is column ``k`` (:class:`asr_kd.hmm.graph.AlignmentGraph`): the search reads
            ``acoustic_scale * loglikes[:, column_pdf[k]] + column_cost[k]``; the alignment's ``pdf_ids``
            are ``column_pdf`` of the path's columns, and its ``graph_cost`` includes the columns' costs.
            ``column_phone_start[k]``: the phone id where column ``k`` starts a phone, else 0 (the phone
            segments are then read from the columns, not from the path's output labels).

    Returns:
        The :class:`Alignment`, or None when no path of exactly T frames reached the final state
        (utterance too short for the transcript, or pruned away even with ``retry_beam``).
    """
    loglikes = np.asarray(loglikes)
    if loglikes.ndim != 2:
        raise ValueError(f"loglikes must be (T, num_pdfs), got shape {loglikes.shape}")
    num_frames = loglikes.shape[0]
    if num_frames == 0:
        return None
    scaled = loglikes * acoustic_scale if acoustic_scale != 1.0 else loglikes
    if columns is not None:
        scaled = scaled[:, columns[0]] + columns[1]
    decodable = kaldi_decoder.DecodableCtc(np.ascontiguousarray(scaled, dtype=np.float32))
    retried, lattice = False, _decode(graph, decodable, beam)
    if lattice is None and retry_beam > beam:
        retried, lattice = True, _decode(graph, decodable, retry_beam)
    if lattice is None:
        return None
    if columns is not None and len(columns) > 2:  # phone starts are columns: no walk over the path's arcs
        ok, ilabels, _, weight = kaldifst.get_linear_symbol_sequence(lattice)
        if not ok:  # pragma: no cover - GetBestPath returns a linear FST
            raise RuntimeError("the best path is not linear")
        graph_cost = weight.value1
        olabels = columns[2][np.asarray(ilabels, dtype=np.int64) - 1]
    else:
        ilabels, olabels, graph_cost = _path_labels(lattice)
    if len(ilabels) != num_frames:  # pragma: no cover - the decoder consumes every frame
        raise RuntimeError(f"best path has {len(ilabels)} frames, the matrix {num_frames}")
    pdf_ids = np.asarray(ilabels, dtype=np.int32) - 1
    if columns is not None:
        graph_cost -= float(columns[1][pdf_ids].astype(np.float64).sum())
        pdf_ids = columns[0][pdf_ids].astype(np.int32)
    olabels_array = np.asarray(olabels, dtype=np.int32)
    starts = np.flatnonzero(olabels_array)
    if len(starts) == 0 or starts[0] != 0:  # pragma: no cover - every path starts with a phone
        raise ValueError("the best path does not start with a phone label; build it with utterance_graph")
    lengths = np.diff(np.append(starts, num_frames))
    phone_ids = np.repeat(olabels_array[starts], lengths).astype(np.int32)
    table = graph.output_symbols
    phones = [(table.find(int(p)) if table is not None else str(int(p)), int(s), int(n))
              for p, s, n in zip(olabels_array[starts], starts, lengths)]
    log_likelihood = float(loglikes[np.arange(num_frames), pdf_ids].astype(np.float64).sum())
    return Alignment(pdf_ids, phone_ids, phones, log_likelihood, graph_cost, acoustic_scale, retried)


def _align_chunk(archive: str, loglikes_list: list[np.ndarray], beam: float, retry_beam: float,
                 acoustic_scale: float, columns_list: list | None = None) -> list[Alignment | None]:
    """Worker: align the graphs of the Kaldi table ``archive`` (keys 0, 1, ...) with ``loglikes_list``."""
    results = []
    with kaldifst.SequentialVectorFstReader(f"ark:{archive}") as reader:
        for key, graph in reader:  # ``graph`` lives until the reader moves on: use it here only
            loglikes = loglikes_list[len(results)]
            if int(key) != len(results):  # pragma: no cover - we wrote the archive ourselves
                raise RuntimeError(f"{archive}: expected key {len(results)}, got {key}")
            columns = None if columns_list is None else columns_list[len(results)]
            results.append(viterbi_align(graph, loglikes, beam, retry_beam, acoustic_scale, columns))
    if len(results) != len(loglikes_list):  # pragma: no cover
        raise RuntimeError(f"{archive}: {len(results)} graphs for {len(loglikes_list)} matrices")
    return results


_POOL: tuple[int, ProcessPoolExecutor] | None = None  #: (num_jobs, pool) kept between align_batch calls


def _worker_pool(num_jobs: int) -> ProcessPoolExecutor:
    """The process pool of ``num_jobs`` spawned workers, created on first use (another size: replaced)."""
    global _POOL
    if _POOL is not None and _POOL[0] != num_jobs:
        shutdown_workers()
    if _POOL is None:
        _POOL = (num_jobs, ProcessPoolExecutor(max_workers=num_jobs, mp_context=get_context("spawn")))
    return _POOL[1]


def shutdown_workers() -> None:
    """Stop the worker processes :func:`align_batch` keeps (they also stop when the interpreter exits)."""
    global _POOL
    if _POOL is not None:
        _POOL[1].shutdown(wait=True, cancel_futures=True)
        _POOL = None


def align_batch(graphs: Sequence[kaldifst.StdVectorFst], loglikes_list: Sequence[np.ndarray],
                num_jobs: int = 1, beam: float = DEFAULT_BEAM, retry_beam: float = DEFAULT_RETRY_BEAM,
                acoustic_scale: float = 1.0, chunks_per_job: int = 4,
                columns_list: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> list[Alignment | None]:
    """:func:`viterbi_align` on many utterances, in ``num_jobs`` processes (see the module docstring).

    Args:
        graphs: one training graph per utterance.
        loglikes_list: the matching (T_i, num_pdfs) float32 matrices.
        num_jobs: worker processes; 1 aligns in this process. The result does not depend on it.
        chunks_per_job: chunks per worker (more: better load balance, more archives).
        columns_list: per utterance, the ``columns`` of :func:`viterbi_align` (graphs with transition
            columns), or None.

    Returns:
        One :class:`Alignment` or None (failed; see :func:`viterbi_align`) per utterance, in input order.
    """
    if len(graphs) != len(loglikes_list):
        raise ValueError(f"got {len(graphs)} graphs but {len(loglikes_list)} log-likelihood matrices")
    if num_jobs < 1:
        raise ValueError(f"num_jobs must be >= 1, got {num_jobs}")
    num_chunks = min(len(graphs), num_jobs * max(1, chunks_per_job))
    if columns_list is not None and len(columns_list) != len(graphs):
        raise ValueError(f"got {len(graphs)} graphs but {len(columns_list)} column tables")
    if num_jobs == 1 or num_chunks <= 1:
        cols = columns_list if columns_list is not None else [None] * len(graphs)
        results = [viterbi_align(g, m, beam, retry_beam, acoustic_scale, c)
                   for g, m, c in zip(graphs, loglikes_list, cols)]
    else:
        results = _align_in_workers(graphs, loglikes_list, num_jobs, num_chunks,
                                    (beam, retry_beam, acoustic_scale), columns_list)
    num_failed = sum(ali is None for ali in results)
    if num_failed:
        logging.info(f"align_batch: {num_failed} of {len(results)} utterances failed to align")
    return results


def _align_in_workers(graphs: Sequence[kaldifst.StdVectorFst], loglikes_list: Sequence[np.ndarray],
                      num_jobs: int, num_chunks: int, options: tuple[float, float, float],
                      columns_list=None) -> list[Alignment | None]:
    """Write ``num_chunks`` graph archives and align them in the worker pool; results in input order."""
    bounds = [round(k * len(graphs) / num_chunks) for k in range(num_chunks + 1)]
    tmp_root = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    pool = _worker_pool(num_jobs)
    with tempfile.TemporaryDirectory(prefix="asr_kd_align.", dir=tmp_root) as tmp_dir:
        futures = []
        try:
            for k, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:])):
                archive = str(Path(tmp_dir) / f"chunk-{k}.ark")
                with kaldifst.VectorFstWriter(f"ark:{archive}") as writer:
                    for i in range(begin, end):
                        writer.write(str(i - begin), graphs[i])
                matrices = [np.asarray(m, dtype=np.float32) for m in loglikes_list[begin:end]]
                cols = None if columns_list is None else list(columns_list[begin:end])
                futures.append(pool.submit(_align_chunk, archive, matrices, *options, cols))
            return [ali for future in futures for ali in future.result()]
        except BaseException:
            for future in futures:
                future.cancel()
            shutdown_workers()  # a broken or interrupted pool is not reused
            raise
