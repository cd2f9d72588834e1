"""Triphone passes of the GMM ladder: Kaldi's ``train_deltas.sh`` (tri1) and ``train_lda_mllt.sh`` (tri2).

One pass, from the previous pass's alignments of the training utterances:

1. features: deltas (tri1), or cepstra spliced +-``splice_context`` frames and LDA to ``lda_dim`` dims
   estimated on the previous alignment's pdfs as classes, silence frames left out (tri2);
2. tree statistics per (triphone, HMM state), questions from phone clustering, a tree of up to
   ``num_leaves`` leaves (:mod:`asr_kd.hmm.build_tree`);
3. one Gaussian per pdf from the tree statistics (gmm-init-model); the previous alignment converted to
   the new pdfs (convert-ali); transition probabilities re-estimated from it;
4. ``num_iters`` Viterbi iterations: realign (context graphs with transition columns, built once per
   tree, :func:`asr_kd.hmm.graph.alignment_graph`; silence pdfs' likelihoods boosted by ``boost_silence``) on ``realign_iters``, MLLT on ``mllt_iters`` (tri2),
   re-estimate the GMM, mix up towards ``total_gauss``; a final realignment with the trained system.

Every pass returns a :class:`asr_kd.hmm.system.GmmSystem`; the training utterances end with its
alignments.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from asr_kd.align.gmm import DiagGmm, num_gauss_schedule
from asr_kd.align.train_mono import TrainingUtterance, batched_log_likelihoods
from asr_kd.align.viterbi import Alignment, align_batch
from asr_kd.data.lang import Lang
from asr_kd.hmm.build_tree import (
    accumulate_tree_stats,
    build_tree,
    cluster_phone_questions,
    frame_contexts,
    leaf_gaussians,
)
from asr_kd.hmm.graph import AlignmentGraph, alignment_graph
from asr_kd.hmm.lda import LdaStats, estimate_lda, estimate_mllt, mllt_stats
from asr_kd.hmm.system import GmmSystem, transform_gmm_features
from asr_kd.hmm.tree import ContextDependency

logger = logging.getLogger(__name__)


@dataclass
class TriConfig:
    """One triphone pass (defaults: Kaldi's train_deltas.sh / train_lda_mllt.sh, scaled to small corpora)."""

    kind: str = "deltas"  # "deltas" (tri1) or "lda_mllt" (tri2)
    num_leaves: int = 500
    total_gauss: int = 4000
    num_iters: int = 20  # Kaldi: 35
    realign_iters: tuple[int, ...] = (5, 10, 15)  # Kaldi: 10 20 30
    mllt_iters: tuple[int, ...] = (2, 4, 6, 12)  # Kaldi's train_lda_mllt.sh
    min_leaf_count: float = 50.0
    cluster_thresh: (
        float | None
    ) = -1.0  # merge leaves losing less than the smallest split gain
    boost_silence: float = (
        1.0  # Kaldi's --boost-silence: silence likelihoods * this in alignment
    )
    splice_context: int = 4
    lda_dim: int = 40
    acoustic_scale: float = 0.1
    self_loop_scale: float = 1.0  # HMM transition costs' scale in the search (Kaldi's --self-loop-scale)
    beam: float = 10.0
    retry_beam: float = 1000.0  # Kaldi: 40; forced-alignment graphs are small
    seed: int = 0


def silence_pdf_mask(tree: ContextDependency, lang: Lang) -> np.ndarray:
    """(num_pdfs,) True for the pdfs of silence phones."""
    silence = {lang.phone_to_id[p] for p in lang.silence_phones}
    return np.array([p in silence for p in tree.pdf_phone])


def system_log_likelihoods(
    system: GmmSystem,
    feats: Sequence[torch.Tensor],
    device,
    boost_silence: float = 1.0,
    silence_mask: np.ndarray | None = None,
    pdf_sets: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Float32 log-likelihoods of already transformed features, (T_i, num_pdfs), or (T_i, len(pdf_sets[i]))
    of only those pdfs; silence boosted by ``log(boost_silence)`` (Kaldi's gmm-boost-silence scales the
    silence pdfs' weights)."""
    boost = math.log(boost_silence) if boost_silence != 1.0 and silence_mask is not None else 0.0
    if pdf_sets is None:
        out = batched_log_likelihoods(system.gmm, feats, device)
        if boost:
            for ll in out:
                ll[:, silence_mask] += boost
        return out
    out = []
    for x, pdfs in zip(feats, pdf_sets):
        with torch.no_grad():
            ll = system.gmm.subset(torch.from_numpy(pdfs)).log_likelihoods(x.to(device)).float().cpu().numpy()
        if boost:
            ll[:, silence_mask[pdfs]] += boost
        out.append(ll)
    return out


def align_system(
    system: GmmSystem,
    graphs: Sequence[AlignmentGraph],
    feats: Sequence[torch.Tensor],
    lang: Lang,
    cfg: TriConfig,
    device,
    num_jobs: int,
) -> list[Alignment | None]:
    """Viterbi alignments of transformed ``feats`` over ``graphs`` (:func:`asr_kd.hmm.graph.alignment_graph`
    of ``system.tree``), with the transition probabilities of ``system.transitions``; pdf ids are global."""
    loglikes = system_log_likelihoods(
        system, feats, device, cfg.boost_silence, silence_pdf_mask(system.tree, lang), [g.pdfs for g in graphs]
    )
    columns = [g.search_columns(system.transitions, cfg.self_loop_scale) for g in graphs]
    alignments = align_batch([g.fst for g in graphs], loglikes, num_jobs=num_jobs, beam=cfg.beam,
                             retry_beam=cfg.retry_beam, acoustic_scale=cfg.acoustic_scale, columns_list=columns)
    for ali, g in zip(alignments, graphs):
        if ali is not None:
            ali.pdf_ids = g.pdfs[ali.pdf_ids].astype(np.int32)
    return alignments


def convert_alignment(
    labels: np.ndarray, old: ContextDependency, new: ContextDependency
) -> np.ndarray:
    """Kaldi's convert-ali: the pdfs of ``new`` for the phones in context and states of ``labels``."""
    windows, states = frame_contexts(
        labels, old.pdf_phone, old.pdf_state, new.context_width, new.central_position
    )
    keys, inverse = np.unique(
        np.concatenate([windows, states[:, None]], 1), axis=0, return_inverse=True
    )
    pdfs = np.array([new.pdf(k[:-1], k[-1]) for k in keys], dtype=np.int32)
    return pdfs[inverse.reshape(-1)]


def state_sequences(labels: Sequence[np.ndarray], tree: ContextDependency):
    """(phone per frame, HMM state per frame) of each alignment, for transition re-estimation."""
    phone, state = np.asarray(tree.pdf_phone), np.asarray(tree.pdf_state)
    return [(phone[lab], state[lab]) for lab in labels]


def _accumulate(gmm: DiagGmm, feats, labels, device):
    stats = gmm.new_stats()
    for start in range(0, len(feats), 256):
        x = torch.cat(list(feats[start : start + 256])).to(device)
        y = torch.from_numpy(
            np.concatenate(labels[start : start + 256]).astype(np.int64)
        ).to(device)
        gmm.accumulate(stats, x, y)
    return stats


def _lda_transform(
    utts, prev: ContextDependency, lang: Lang, cfg: TriConfig, base_feats
) -> dict:
    """The LDA transform of tri2 on the previous alignment (silence frames excluded, as Kaldi)."""
    from asr_kd.align.feats import NUM_CEPS
    from asr_kd.hmm.lda import splice

    silence = silence_pdf_mask(prev, lang)
    stats = LdaStats(prev.num_pdfs, NUM_CEPS * (2 * cfg.splice_context + 1))
    for utt, feats in zip(utts, base_feats):
        x = splice(feats[:, :NUM_CEPS].double(), cfg.splice_context)
        labels = torch.from_numpy(utt.labels.astype(np.int64))
        stats.add(
            x, labels, torch.from_numpy((~silence[utt.labels]).astype(np.float64))
        )
    dim = min(cfg.lda_dim, int((stats.count > 0).sum()) - 1)
    matrix, eigvals = estimate_lda(stats, dim)
    logger.info(
        "LDA: %d -> %d dims; between-class eigenvalues %.2f .. %.2f",
        matrix.shape[1],
        dim,
        float(eigvals[0]),
        float(eigvals[-1]),
    )
    return {
        "kind": "splice_lda",
        "context": cfg.splice_context,
        "matrix": matrix.float(),
    }


def _mllt_step(gmm: DiagGmm, feats, labels, device) -> torch.Tensor:
    """Estimate MLLT from the current model and alignment (per-Gaussian scatter, Viterbi-labelled frames)."""
    num_pdfs, max_gauss, dim = gmm.num_pdfs, gmm.max_gauss, gmm.dim
    count = torch.zeros(num_pdfs * max_gauss, dtype=torch.float64)
    first = torch.zeros(num_pdfs * max_gauss, dim, dtype=torch.float64)
    outer = torch.zeros(num_pdfs * max_gauss, dim * dim, dtype=torch.float64)
    log_consts = gmm._log_consts().float().cpu()
    means, ivar = gmm.means.cpu(), 1.0 / gmm.vars.cpu()
    for start in range(0, len(feats), 256):
        x = torch.cat(list(feats[start : start + 256])).float()
        y = torch.from_numpy(
            np.concatenate(labels[start : start + 256]).astype(np.int64)
        )
        for s in range(0, x.shape[0], 20000):
            xs, pdfs = x[s : s + 20000], y[s : s + 20000]
            diff = xs[:, None, :] - means[pdfs]
            comp = log_consts[pdfs] - 0.5 * (diff * diff * ivar[pdfs]).sum(-1)
            best = comp.argmax(-1)  # the most likely Gaussian of the labelled pdf
            flat = pdfs * max_gauss + best
            xd = xs.double()
            count.index_add_(0, flat, torch.ones(len(flat), dtype=torch.float64))
            first.index_add_(0, flat, xd)
            outer.index_add_(
                0, flat, (xd[:, :, None] * xd[:, None, :]).reshape(len(flat), -1)
            )
    used = count > 0
    mu = means.reshape(-1, dim).double()[used]
    c, f = count[used], first[used]
    xx = outer[used].reshape(-1, dim, dim)
    scatter = (
        xx
        - f[:, :, None] * mu[:, None, :]
        - mu[:, :, None] * f[:, None, :]
        + c[:, None, None] * mu[:, :, None] * mu[:, None, :]
    )
    g = mllt_stats(scatter, gmm.vars.cpu().reshape(-1, dim).double()[used])
    return estimate_mllt(g, float(c.sum()))


def _transform_gmm(gmm: DiagGmm, a: torch.Tensor) -> None:
    """Means through ``A``; variances: the diagonal of ``A diag(var) A^T`` (re-estimated next update)."""
    a32 = a.float().to(gmm.device)
    gmm.means = gmm.means @ a32.T
    gmm.vars = (
        (gmm.vars.double()[..., None, :] * (a.double().to(gmm.device) ** 2)).sum(-1)
    ).float()
    gmm.center = gmm.center @ a32.T


def train_tri(
    utts: list[TrainingUtterance],
    prev: GmmSystem,
    lang: Lang,
    cfg: TriConfig,
    device,
    num_jobs: int = 1,
    name: str = "tri1",
) -> GmmSystem:
    """One triphone pass (module docstring); ``utts`` carry ``prev``'s alignments and end with the new ones."""
    start_time = time.perf_counter()
    base = [u.feats for u in utts]
    if cfg.kind == "deltas":
        transform: dict = {"kind": "deltas"}
    elif cfg.kind == "lda_mllt":
        transform = _lda_transform(utts, prev.tree, lang, cfg, base)
    else:
        raise ValueError(f"unknown pass kind {cfg.kind!r}: 'deltas' or 'lda_mllt'")
    feats = [transform_gmm_features(transform, f) for f in base]
    labels = [u.labels for u in utts]
    stats = accumulate_tree_stats(
        labels, [f.numpy() for f in feats], prev.tree.pdf_phone, prev.tree.pdf_state
    )
    sil = [lang.phone_to_id[p] for p in lang.silence_phones]
    questions = cluster_phone_questions(
        stats,
        [lang.phone_to_id[p] for p in lang.phones],
        extra=[sil, [0]],
        seed=cfg.seed,
    )
    roots = [
        (lang.phone_to_id[p], s) for p in lang.phones for s in range(lang.num_states(p))
    ]
    tree, _ = build_tree(
        stats,
        questions,
        roots,
        cfg.num_leaves,
        cfg.min_leaf_count,
        cluster_thresh=cfg.cluster_thresh,
        info={"kind": name, "num_questions": len(questions)},
    )
    count, first, second = leaf_gaussians(tree, stats)
    total = count.sum()
    gmean, gvar = (
        first.sum(0) / total,
        second.sum(0) / total - (first.sum(0) / total) ** 2,
    )
    safe = np.maximum(count, 1.0)[:, None]
    means = np.where(count[:, None] > 0, first / safe, gmean)
    var = np.where(count[:, None] > 0, second / safe - means**2, gvar)
    var = np.maximum(var, 0.01 * gvar)
    gmm = DiagGmm(
        torch.from_numpy(means)[:, None],
        torch.from_numpy(var)[:, None],
        torch.zeros(tree.num_pdfs, 1),
        center=torch.from_numpy(gmean),
    ).to(device)
    labels = [convert_alignment(lab, prev.tree, tree) for lab in labels]
    transitions = prev.transitions.estimate(state_sequences(labels, tree))
    system = GmmSystem(
        name, gmm, transform, tree, transitions, prev.lang_sha256, {"pass": asdict(cfg)}
    )
    schedule = num_gauss_schedule(
        cfg.num_iters, tree.num_pdfs, max(cfg.total_gauss, tree.num_pdfs)
    )
    graphs = [alignment_graph(lang, u.words, tree) for u in utts]  # once: transitions are the search's
    for it in tqdm(range(cfg.num_iters), desc=f"train {name}", unit="iter"):
        if it in cfg.realign_iters:
            labels, failed = _realign(
                system, graphs, feats, labels, lang, cfg, device, num_jobs
            )
            system.transitions = system.transitions.estimate(
                state_sequences(labels, tree)
            )
            logger.info(f"{name} iter {it}: realigned ({failed} failed)")
        if cfg.kind == "lda_mllt" and it in cfg.mllt_iters:
            a = _mllt_step(gmm, feats, labels, device)
            _transform_gmm(gmm, a)
            transform["matrix"] = (a @ transform["matrix"].double()).float()
            system.transform = dict(transform)  # the system keeps its own copy
            feats = [transform_gmm_features(transform, f) for f in base]
            logger.info(
                f"{name} iter {it}: MLLT, log|det A| = {float(torch.linalg.slogdet(a)[1]):.3f}"
            )
        info = gmm.update(_accumulate(gmm, feats, labels, device))
        gmm.mix_up(schedule[it], seed=cfg.seed)
        logger.info(
            f"{name} iter {it}: avg log-likelihood/frame {info.avg_log_like:.3f}; {gmm.total_gauss} Gaussians"
        )
    labels, failed = _realign(
        system, graphs, feats, labels, lang, cfg, device, num_jobs
    )
    for utt, lab in zip(utts, labels):
        utt.labels = lab
    logger.info(
        f"{name}: {tree.num_pdfs} pdfs, {gmm.total_gauss} Gaussians, final realignment ({failed} failed), "
        f"{time.perf_counter() - start_time:.1f} s"
    )
    return system


def _realign(system, graphs, feats, labels, lang, cfg, device, num_jobs):
    """Realign with ``graphs`` (:class:`AlignmentGraph`); utterances that fail keep their labels."""
    alignments = align_system(system, graphs, feats, lang, cfg, device, num_jobs)
    new, failed = [], 0
    for old, ali in zip(labels, alignments):
        if ali is None:
            failed += 1
            new.append(old)
        else:
            new.append(ali.pdf_ids)
    return new, failed
