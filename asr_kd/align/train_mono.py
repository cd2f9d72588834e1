"""Flat-start Viterbi training of a monophone GMM-HMM (Kaldi's ``steps/train_mono.sh``), in torch.

Starting from transcripts alone: every training utterance gets an equal alignment of a random path
through its training graph (:func:`asr_kd.align.graph.equal_alignment`); one Gaussian per pdf is
estimated from it; then each iteration re-estimates the GMMs from the current alignments, adds
Gaussians (Kaldi's mix-up schedule) and, on the re-alignment iterations, realigns every utterance with
Viterbi (kaldi-decoder) over ``acoustic_scale * GMM log-likelihoods`` and ``self_loop_scale *`` the
HMM's transition costs (Kaldi's ``--acoustic-scale`` and ``--self-loop-scale``).

The GMM work is batched over all frames of all utterances (GPU when present); the searches run in
``num_jobs`` processes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from asr_kd.align.frames import segments, tier_to_frame_symbols
from asr_kd.align.gmm import DiagGmm, GmmStats, num_gauss_schedule
from asr_kd.align.graph import equal_alignment, utterance_graph
from asr_kd.align.viterbi import align_batch
from asr_kd.data.lang import Lang

CHUNK_FRAMES = 200_000  # frames per batched GMM evaluation


@dataclass
class MonoConfig:
    """Monophone training schedule (defaults follow Kaldi's train_mono.sh, scaled to small corpora)."""

    num_iters: int = 25  # re-estimation iterations after the flat start
    realign_iters: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23)
    total_gauss: int = 1000  # Gaussians over all pdfs at the end (mixed up linearly)
    max_utts: int = 3000  # training subset: this many utterances of the train split (random, seeded)
    # the monophones alone train on this many of them (random, seeded; 0: all), as Kaldi's recipes run
    # train_mono.sh on a subset; the triphone passes start from a monophone alignment of every utterance
    mono_utts: int = 0
    acoustic_scale: float = 0.1  # GMM log-likelihood scale against transition costs in the search
    # HMM transition costs' scale in the search (Kaldi's --self-loop-scale; its aligners' scale_opts use
    # 0.1, the acoustic scale). 1.0 (the costs as probabilities) aligned synth_rm better than 0.1 (test
    # frame agreement mono 78.5 vs 76.7%, tri1 77.8 vs 76.7%: recipes/synth_rm/RESULTS.md)
    self_loop_scale: float = 1.0
    beam: float = 10.0
    retry_beam: float = 40.0
    seed: int = 0
    boost_silence: float = 1.0  # Kaldi's --boost-silence: silence pdfs' likelihoods * this in realignment
    init: str = "flat"  # "flat": equal alignment; "reference": the cuts' reference phone tiers (an oracle)


@dataclass
class TrainingUtterance:
    id: str
    words: list[str]
    graph: object  # kaldifst.StdVectorFst (monophone flat start) or hmm.graph.AlignmentGraph (a system's)
    feats: torch.Tensor  # (T, D) GMM features
    labels: np.ndarray | None = None  # (T,) pdf ids of the current alignment


def batched_log_likelihoods(gmm: DiagGmm, feats: Sequence[torch.Tensor], device: torch.device) -> list[np.ndarray]:
    """``gmm.log_likelihoods`` of many utterances, evaluated in large chunks of frames.

    Returns one ``(T_i, num_pdfs)`` float32 array per utterance.
    """
    lengths = [f.shape[0] for f in feats]
    out: list[np.ndarray] = []
    start = 0
    while start < len(feats):
        end, frames = start, 0
        while end < len(feats) and (frames == 0 or frames + lengths[end] <= CHUNK_FRAMES):
            frames += lengths[end]
            end += 1
        x = torch.cat(list(feats[start:end])).to(device)
        with torch.no_grad():
            ll = gmm.log_likelihoods(x).float().cpu().numpy()
        out.extend(np.split(ll, np.cumsum(lengths[start:end])[:-1]))
        start = end
    return out


def accumulate(gmm: DiagGmm, utts: Sequence[TrainingUtterance], device: torch.device) -> GmmStats:
    """GMM statistics of all utterances' frames under their current labels."""
    stats = gmm.new_stats()
    batch_x, batch_y, frames = [], [], 0
    for i, utt in enumerate(utts):
        batch_x.append(utt.feats)
        batch_y.append(torch.from_numpy(utt.labels.astype(np.int64)))
        frames += utt.feats.shape[0]
        if frames >= CHUNK_FRAMES or i == len(utts) - 1:
            gmm.accumulate(stats, torch.cat(batch_x).to(device), torch.cat(batch_y).to(device))
            batch_x, batch_y, frames = [], [], 0
    return stats


def realign(
    gmm: DiagGmm, utts: Sequence[TrainingUtterance], cfg: MonoConfig, device: torch.device, num_jobs: int,
    lang: Lang | None = None,
) -> int:
    """Viterbi-realign ``utts`` in place; returns how many failed (they keep their old labels).
    ``lang`` gives the silence pdfs that ``cfg.boost_silence`` boosts."""
    if cfg.boost_silence != 1.0 and lang is None:
        raise ValueError("boost_silence needs the lang (its silence phones)")
    loglikes = batched_log_likelihoods(gmm, [u.feats for u in utts], device)
    if cfg.boost_silence != 1.0:
        silence = [pdf for p in lang.silence_phones for pdf in lang.pdf_ids(p)]
        for ll in loglikes:
            ll[:, silence] += math.log(cfg.boost_silence)
    alignments = align_batch(
        [u.graph for u in utts], loglikes, num_jobs=num_jobs, beam=cfg.beam,
        retry_beam=cfg.retry_beam, acoustic_scale=cfg.acoustic_scale,
    )  # fmt: skip
    failed = 0
    for utt, ali in zip(utts, alignments):
        if ali is None:
            failed += 1
        else:
            utt.labels = ali.pdf_ids
    return failed


def flat_start_labels(utt: TrainingUtterance, lang: Lang, seed: int) -> np.ndarray | None:
    """Equal alignment of a random path; near the minimum length, of the path with no optional silence
    (a random path rarely skips every optional silence)."""
    labels = equal_alignment(utt.graph, utt.feats.shape[0], seed=seed)
    if labels is None:
        labels = equal_alignment(utterance_graph(lang, utt.words, optional_silence=False), utt.feats.shape[0], seed)
    # (equal_alignment draws its random path whatever the arc costs are: the unscaled graph gives the same)
    return labels


def reference_labels(items, num_frames: int, lang: Lang, offset: float = 0.0, ref_map=None,
                     frame_shift: float = 0.01) -> np.ndarray:
    """Monophone pdf ids of every frame from a reference phone tier: each phone's frames (the frames whose
    centre it contains, :func:`asr_kd.align.frames.tier_to_frame_symbols`) split evenly over its HMM
    states, earlier states taking the remainder (a phone of fewer frames than states uses its first
    states only). The oracle initialisation of ``MonoConfig(init="reference")``.

    Args:
        items: the reference tier (lhotse ``AlignmentItem``s: symbol, start, duration in seconds).
        ref_map: maps reference symbols to the lang's phones (None: the same inventory).

    Raises:
        ValueError: a reference phone is not a phone of ``lang``.
    """
    symbols = tier_to_frame_symbols(items, num_frames, frame_shift, offset)
    if ref_map is not None:
        symbols = [ref_map(s) for s in symbols]
    labels = np.empty(num_frames, dtype=np.int32)
    for phone, start, length in segments(symbols):
        if phone not in lang.phone_to_id:
            raise ValueError(f"reference phone {phone!r} is not in the lang's phones.txt")
        pdfs = lang.pdf_ids(phone)
        # state k of n gets frames [ceil(k * length / n), ceil((k + 1) * length / n))
        bounds = -(-np.arange(len(pdfs) + 1) * length // len(pdfs))
        labels[start : start + length] = np.repeat(np.asarray(pdfs, dtype=np.int32), np.diff(bounds))
    return labels


def train_mono(
    utts: list[TrainingUtterance],
    lang: Lang,
    cfg: MonoConfig,
    device: torch.device,
    num_jobs: int = 1,
) -> DiagGmm:
    """Flat start (or, with ``cfg.init == "reference"``, the ``labels`` the utterances carry) + Viterbi
    training; ``utts`` end with their final training alignments."""
    num_pdfs = lang.num_pdfs
    if cfg.init not in ("flat", "reference"):
        raise ValueError(f"MonoConfig.init must be 'flat' or 'reference', got {cfg.init!r}")
    kept = []
    for k, utt in enumerate(utts):
        if cfg.init == "flat":
            utt.labels = flat_start_labels(utt, lang, cfg.seed + k)
        elif utt.labels is None or len(utt.labels) != utt.feats.shape[0]:
            raise ValueError(f"{utt.id}: init='reference' needs reference labels of one pdf per frame")
        if utt.labels is not None:
            kept.append(utt)
    if not kept:
        raise ValueError("no training utterance is long enough for its transcript's HMM")
    if len(kept) < len(utts):
        logging.warning(f"flat start: {len(utts) - len(kept)} utterances too short for an equal alignment, dropped")
    utts[:] = kept
    all_feats = torch.cat([u.feats for u in utts]).double()
    gmm = DiagGmm.init_flat(num_pdfs, all_feats.mean(0), all_feats.var(0)).to(device)
    del all_feats
    # update 0 uses the flat-start alignment; update `it` realigns first when `it` is a realign iteration
    schedule = num_gauss_schedule(cfg.num_iters + 1, num_pdfs, max(cfg.total_gauss, num_pdfs))
    for it in tqdm(range(cfg.num_iters + 1), desc="train monophone GMM", unit="iter"):
        realigned = it in cfg.realign_iters
        failed = realign(gmm, utts, cfg, device, num_jobs, lang) if realigned else 0
        info = gmm.update(accumulate(gmm, utts, device))
        gmm.mix_up(schedule[it])
        logging.info(
            f"iter {it}: avg log-likelihood/frame {info.avg_log_like:.3f} over {int(info.num_frames)} frames"
            f"{f' (realigned, {failed} failed)' if realigned else ''}; {gmm.total_gauss} Gaussians"
        )
    return gmm
