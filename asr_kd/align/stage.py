"""The ``align`` stage: flat-start alignment of every cut of a corpus to per-frame pdf ids.

Usage::

    asr-kd align --cuts-dir data/fbank --corpus synth_digits --lang-dir data/lang \\
        --output-dir data/ali --exp-dir exp/synth_digits/align --nj 2

Writes, per split, ``<output-dir>/<corpus>_cuts_<split>.jsonl.gz``: the feature cuts plus a custom
field ``frame_labels``, a lhotse ``TemporalArray`` of int32 pdf ids (one per feature frame, stored
exactly in ``<corpus>_frame_labels_<split>.h5``). Into ``--exp-dir``: the monophone GMM
(``final.gmm.pt`` with its config), ``pdf_counts.txt`` (frames per pdf in the training alignments: the
priors of hybrid decoding), the list of skipped cuts with reasons, and ``report.json`` /
``report.txt`` when the cuts carry reference phone alignments (a ``"phone"`` alignment tier).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from lhotse import CutSet, NumpyHdf5Writer
from tqdm import tqdm

from asr_kd.align.feats import gmm_features
from asr_kd.align.gmm import DiagGmm
from asr_kd.align.graph import AlignmentError, min_num_frames, utterance_graph
from asr_kd.align.report import AlignmentScorer, format_report
from asr_kd.align.train_mono import MonoConfig, TrainingUtterance, batched_log_likelihoods, train_mono
from asr_kd.align.viterbi import align_batch
from asr_kd.data.lang import Lang
from asr_kd.utils import atomic_output, resolve_device, write_json, write_text

ALIGN_BATCH_CUTS = 2000  # cuts whose features are held in memory at once in the final alignment


def cut_words(cut) -> list[str]:
    return " ".join(s.text or "" for s in cut.supervisions).split()


def _load_utterance(cut, lang: Lang) -> tuple[TrainingUtterance | None, str | None]:
    """Features + graph of one cut, or the reason it cannot be aligned."""
    words = cut_words(cut)
    if not words:
        return None, "empty_transcript"
    try:
        graph = utterance_graph(lang, words)
        needed = min_num_frames(lang, words)
    except AlignmentError as e:
        return None, f"no_pronunciation: {e}"
    if cut.num_frames < needed:
        return None, f"too_short: {cut.num_frames} frames < {needed} needed by its HMM"
    feats = gmm_features(torch.from_numpy(cut.load_features()))
    return TrainingUtterance(cut.id, words, graph, feats), None


def _load_many(cuts: Sequence, lang: Lang, skipped: dict[str, str], desc: str) -> list[TrainingUtterance]:
    utts = []
    for cut in tqdm(cuts, desc=desc, unit="cut", leave=False):
        utt, reason = _load_utterance(cut, lang)
        if utt is None:
            skipped[cut.id] = reason
            logging.warning(f"{cut.id}: skipped ({reason})")
        else:
            utts.append(utt)
    return utts


def align_corpus(
    cuts_dir: Path | str,
    corpus: str,
    lang_dir: Path | str,
    output_dir: Path | str,
    exp_dir: Path | str,
    splits: Sequence[str] = ("train", "dev", "test"),
    train_split: str = "train",
    num_jobs: int = 1,
    device: str = "auto",
    config: MonoConfig | None = None,
    ref_map: Callable[[str], str] | None = None,
) -> dict:
    """Train the flat-start aligner on ``train_split`` and align every split; see the module docstring.

    Returns the alignment report (empty when no split has reference alignments).
    """
    cfg = config or MonoConfig()
    cuts_dir, output_dir, exp_dir = Path(cuts_dir), Path(output_dir), Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    lang = Lang.load(lang_dir)
    write_json(exp_dir / "config.json", {
        "mono": asdict(cfg), "cuts_dir": str(cuts_dir), "corpus": corpus, "lang_dir": str(lang_dir),
        "output_dir": str(output_dir), "splits": list(splits), "train_split": train_split, "num_jobs": num_jobs,
        "device": str(dev),
    })  # fmt: skip
    cut_sets = {s: _read_cuts(cuts_dir, corpus, s) for s in splits}
    if train_split not in cut_sets:
        raise ValueError(f"train_split {train_split!r} must be one of --splits {list(splits)}")
    model_path = exp_dir / "final.gmm.pt"
    if model_path.is_file():
        logging.info(f"{model_path} exists: reusing the trained aligner")
        gmm = DiagGmm.from_state_dict(torch.load(model_path, map_location="cpu")["gmm"]).to(dev)
    else:
        gmm = _train(cut_sets[train_split], lang, cfg, dev, num_jobs, exp_dir)
    counts = None
    reports: dict[str, dict] = {}
    for split in splits:
        out_cuts = output_dir / f"{corpus}_cuts_{split}.jsonl.gz"
        if out_cuts.is_file():
            logging.info(f"{out_cuts} exists: {split} already aligned")
            aligned = CutSet.from_file(out_cuts) or CutSet.from_cuts([])  # lhotse reads an empty file as None
            skipped = None
        else:
            aligned, skipped = _align_split(cut_sets[split], lang, gmm, cfg, dev, num_jobs, output_dir, corpus, split)
            write_text(exp_dir / f"skipped_{split}.txt", "".join(f"{k}\t{v}\n" for k, v in sorted(skipped.items())))
            with atomic_output(out_cuts) as tmp:
                aligned.to_file(tmp)
        if split == train_split:
            counts = pdf_counts(aligned, lang.num_pdfs)
        report = score_alignments(aligned, lang, len(skipped) if skipped is not None else None, ref_map)
        if report is not None:
            reports[split] = report
    if counts is not None:
        write_text(exp_dir / "pdf_counts.txt", "".join(f"{int(c)}\n" for c in counts))
    return _write_report(reports, exp_dir)


def _read_cuts(cuts_dir: Path, corpus: str, split: str) -> CutSet:
    path = cuts_dir / f"{corpus}_cuts_{split}.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `asr-kd features` (stage 1) first")
    return CutSet.from_file(path)


def _train(train_cuts: CutSet, lang: Lang, cfg: MonoConfig, dev, num_jobs: int, exp_dir: Path) -> DiagGmm:
    cuts = list(train_cuts)
    rng = np.random.default_rng(cfg.seed)
    if len(cuts) > cfg.max_utts:
        cuts = [cuts[i] for i in sorted(rng.choice(len(cuts), cfg.max_utts, replace=False))]
    skipped: dict[str, str] = {}
    utts = _load_many(cuts, lang, skipped, "load training cuts")
    logging.info(f"training the aligner on {len(utts)} cuts ({sum(u.feats.shape[0] for u in utts)} frames)")
    start = time.perf_counter()
    gmm = train_mono(utts, lang, cfg, dev, num_jobs)
    logging.info(f"aligner trained in {time.perf_counter() - start:.1f} s")
    state = {"gmm": gmm.state_dict(), "config": asdict(cfg), "num_pdfs": lang.num_pdfs}
    with atomic_output(exp_dir / "final.gmm.pt") as tmp:
        torch.save(state, tmp)
    return gmm


def _align_split(cuts: CutSet, lang: Lang, gmm: DiagGmm, cfg: MonoConfig, dev, num_jobs: int,
                 output_dir: Path, corpus: str, split: str):
    """Align every cut of one split; returns (cuts with frame_labels, {cut id: skip reason})."""
    output_dir.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    aligned = []
    all_cuts = list(cuts)
    start = time.perf_counter()
    h5 = output_dir / f"{corpus}_frame_labels_{split}.h5"
    with atomic_output(h5) as tmp, NumpyHdf5Writer(tmp) as writer:
        for b in range(0, len(all_cuts), ALIGN_BATCH_CUTS):
            batch = all_cuts[b : b + ALIGN_BATCH_CUTS]
            utts = _load_many(batch, lang, skipped, f"load {split} cuts")
            loglikes = batched_log_likelihoods(gmm, [u.feats for u in utts], dev)
            results = align_batch(
                [u.graph for u in utts], loglikes, num_jobs=num_jobs, beam=cfg.beam,
                retry_beam=cfg.retry_beam, acoustic_scale=cfg.acoustic_scale,
            )  # fmt: skip
            by_id = {c.id: c for c in batch}
            for utt, ali in zip(utts, results):
                if ali is None:
                    skipped[utt.id] = "no_path: Viterbi found no path even with the retry beam"
                    logging.warning(f"{utt.id}: skipped ({skipped[utt.id]})")
                    continue
                cut = by_id[utt.id]
                labels = writer.store_array(
                    utt.id, ali.pdf_ids.astype(np.int32), frame_shift=cut.frame_shift, temporal_dim=0,
                    start=cut.start,
                )  # fmt: skip
                labels.array.storage_path = str(h5)
                aligned.append(cut.with_custom("frame_labels", labels))
    seconds = time.perf_counter() - start
    audio = sum(c.duration for c in aligned)
    reasons = Counter(v.split(":")[0] for v in skipped.values())
    logging.info(
        f"{split}: aligned {len(aligned)} cuts, skipped {len(skipped)} {dict(reasons) or ''}; "
        f"{audio / 3600:.3f} h in {seconds:.1f} s ({audio / max(seconds, 1e-9):.0f}x real time)"
    )
    return CutSet.from_cuts(aligned), skipped


def pdf_counts(cuts: CutSet, num_pdfs: int) -> np.ndarray:
    """Frames per pdf id over the ``frame_labels`` of ``cuts``: ``(num_pdfs,)`` int64."""
    counts = np.zeros(num_pdfs, dtype=np.int64)
    for cut in cuts:
        counts += np.bincount(cut.load_frame_labels(), minlength=num_pdfs)
    return counts


def score_alignments(cuts: CutSet, lang: Lang, num_skipped: int | None, ref_map=None) -> dict | None:
    """Agreement of ``frame_labels`` with the cuts' reference ``"phone"`` tiers, or None if none have one."""
    scorer = AlignmentScorer(ref_map=ref_map)
    phone_of_pdf = [lang.phone_symbols[i] for i in lang.pdf_to_phone_id]
    for cut in cuts:
        sup = cut.supervisions[0]
        if not sup.alignment or "phone" not in sup.alignment:
            continue
        aligned = [phone_of_pdf[p] for p in cut.load_frame_labels()]
        # lhotse keeps alignment times relative to the recording: subtract the cut's start
        scorer.add(aligned, sup.alignment["phone"], offset=cut.start)
    if scorer.num_cuts == 0:
        return None
    return scorer.report(num_skipped=num_skipped or 0)


def _write_report(reports: dict[str, dict], exp_dir: Path) -> dict:
    if not reports:
        return {}
    headline = reports.get("test") or reports[sorted(reports)[-1]]
    report = {**headline, "split": "test" if "test" in reports else sorted(reports)[-1], "splits": reports}
    write_json(exp_dir / "report.json", report)
    text = "\n\n".join(f"== {split} ==\n{format_report(r)}" for split, r in reports.items())
    write_text(exp_dir / "report.txt", text + "\n")
    logging.info("alignment report:\n" + text)
    return report
