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

The GMM ladder: the monophone flat start (``mono``), then each triphone pass of ``passes`` in order
(``tri1``: deltas, ``tri2``: LDA+MLLT; :mod:`asr_kd.align.train_tri`), each trained on the previous
one's training alignments. Every pass is saved as ``<pass>.gmm.pt`` (:class:`asr_kd.hmm.system.GmmSystem`)
and scored on every split that has reference tiers (``report.json``'s ``passes``); the last one is
``final.gmm.pt``, with its ``tree.json`` and ``transitions.json``, and gives the ``frame_labels`` (its
tied-state pdf ids) and ``pdf_counts.txt``. A ``final.gmm.pt`` is reused only when it was built for
the same lang (``lang_sha256``) and the same training config; otherwise the stage stops and says so.

Guarantees: the stage holds :func:`asr_kd.guard.stage_lock` on ``--output-dir`` and ``--exp-dir`` and
removes a killed run's ``.tmp.*`` files (e.g. half-written ``.h5`` archives) from both. An aligned split
is reused only when its key (``<corpus>_cuts_<split>.jsonl.gz.key.json``: the sha256 of ``final.gmm.pt``
and of the input cuts, :func:`asr_kd.guard.check_artifact`) matches and its manifest and labels archive
are as recorded; otherwise it is realigned. Cuts with unreadable or non-finite features are skipped by
id and counted; a split that skipped more than ``max_skipped_share`` of its cuts fails before its
manifest is written; an error writing the output (disk full, file-size limit) stops the stage.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet, NumpyHdf5Writer
from tqdm import tqdm

from asr_kd.align.feats import gmm_features
from asr_kd.align.graph import AlignmentError, min_num_frames, utterance_graph
from asr_kd.align.report import AlignmentScorer, format_passes, format_report
from asr_kd.align.train_mono import MonoConfig, TrainingUtterance, realign, reference_labels, train_mono
from asr_kd.align.train_tri import TriConfig, align_system, train_tri
from asr_kd.data.lang import Lang
from asr_kd.guard import (
    DEFAULT_MAX_SKIPPED_SHARE,
    artifact_key_path,
    check_artifact,
    check_skipped_share,
    raise_if_output_error,
    record_artifact,
    remove_stale_temporaries,
    stage_lock,
)
from asr_kd.hmm.graph import alignment_graph
from asr_kd.hmm.system import (
    GmmSystem,
    StaleSystemError,
    lang_sha256,
    transform_gmm_features,
)
from asr_kd.hmm.transitions import TransitionModel
from asr_kd.hmm.tree import ContextDependency
from asr_kd.utils import atomic_output, file_sha256, resolve_device, write_json, write_text

ALIGN_BATCH_CUTS = 2000  # cuts whose features are held in memory at once in the final alignment
#: the search settings a saved system aligns with (its ``config["pass"]``)
SEARCH_KEYS = ("acoustic_scale", "self_loop_scale", "beam", "retry_beam", "boost_silence")


def cut_words(cut) -> list[str]:
    return " ".join(s.text or "" for s in cut.supervisions).split()


def _load_utterance(cut, lang: Lang, system: GmmSystem | None = None, self_loop_scale: float = 1.0
                    ) -> tuple[TrainingUtterance | None, str | None]:
    """Features + graph of one cut (monophone graph with its transition costs times ``self_loop_scale``,
    or ``system``'s context graph, whose costs the search adds), or the reason it cannot be aligned."""
    words = cut_words(cut)
    if not words:
        return None, "empty_transcript"
    try:
        if system is None:
            graph = utterance_graph(lang, words, self_loop_scale=self_loop_scale)
        else:
            graph = alignment_graph(lang, words, system.tree)
        needed = min_num_frames(lang, words)
    except AlignmentError as e:
        return None, f"no_pronunciation: {e}"
    if cut.num_frames < needed:
        return None, f"too_short: {cut.num_frames} frames < {needed} needed by its HMM"
    try:
        fbank = cut.load_features()
    except Exception as e:  # a truncated or missing archive
        return None, f"unreadable_features: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    bad = int(np.size(fbank) - np.count_nonzero(np.isfinite(fbank)))
    if bad:
        return None, f"non_finite_features: {bad} of {np.size(fbank)} fbank values are NaN or infinite"
    feats = gmm_features(torch.from_numpy(fbank))
    return TrainingUtterance(cut.id, words, graph, feats), None


def _load_many(cuts: Sequence, lang: Lang, skipped: dict[str, str], desc: str,
               system: GmmSystem | None = None, self_loop_scale: float = 1.0) -> list[TrainingUtterance]:
    utts = []
    for cut in tqdm(cuts, desc=desc, unit="cut", leave=False):
        utt, reason = _load_utterance(cut, lang, system, self_loop_scale)
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
    passes: Sequence[tuple[str, TriConfig]] = (),
    max_skipped_share: float = DEFAULT_MAX_SKIPPED_SHARE,
) -> dict:
    """Train the GMM ladder on ``train_split`` and align every split; see the module docstring.

    Args:
        passes: the triphone passes after the monophone one, ``(name, config)`` in order (empty: the
            monophone system aligns).
        max_skipped_share: a split whose skipped share of cuts is above this fails.

    Returns:
        The alignment report (empty when no split has reference alignments).

    Raises:
        StageError: another run holds ``output_dir`` or ``exp_dir``.
        OutputIOError: writing the output failed (disk full, file too large, I/O error).
        TooManySkippedError: a split skipped more than ``max_skipped_share`` of its cuts.
    """
    cuts_dir, output_dir, exp_dir = Path(cuts_dir), Path(output_dir), Path(exp_dir)
    with stage_lock(output_dir, "align"), stage_lock(exp_dir, "align"):
        remove_stale_temporaries(output_dir)
        remove_stale_temporaries(exp_dir)
        try:
            return _align_corpus(
                cuts_dir, corpus, lang_dir, output_dir, exp_dir, splits, train_split, num_jobs, device,
                config or MonoConfig(), ref_map, passes, max_skipped_share,
            )  # fmt: skip
        except OSError as exc:  # a manifest, model or report could not be written
            raise_if_output_error(exc, output_dir)
            raise


def _align_corpus(cuts_dir: Path, corpus: str, lang_dir, output_dir: Path, exp_dir: Path, splits, train_split: str,
                  num_jobs: int, device: str, cfg: MonoConfig, ref_map, passes, max_skipped_share: float) -> dict:
    exp_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    lang = Lang.load(lang_dir)
    train_config = {"mono": asdict(cfg), "passes": [[name, asdict(c)] for name, c in passes]}
    write_json(exp_dir / "config.json", {
        **train_config, "cuts_dir": str(cuts_dir), "corpus": corpus, "lang_dir": str(lang_dir),
        "output_dir": str(output_dir), "splits": list(splits), "train_split": train_split, "num_jobs": num_jobs,
        "device": str(dev),
    })  # fmt: skip
    cut_sets = {s: _read_cuts(cuts_dir, corpus, s) for s in splits}
    if train_split not in cut_sets:
        raise ValueError(f"train_split {train_split!r} must be one of --splits {list(splits)}")
    model_path = exp_dir / "final.gmm.pt"
    expected_sha = lang_sha256(lang)
    pass_reports: dict[str, dict] = {}
    timing: dict[str, float] = {}
    if model_path.is_file():
        system = GmmSystem.load(model_path, expected_lang_sha256=expected_sha, device=dev)
        if system.config.get("training") != json_roundtrip(train_config):
            raise StaleSystemError(f"{model_path} was trained with another config than this run's: delete "
                                   f"{exp_dir} (or use another --exp-dir) and rerun")
        logging.info(f"{model_path} exists: reusing the trained aligner ({system.name})")
        passes_path = exp_dir / "passes.json"
        if passes_path.is_file():
            pass_reports = json.loads(passes_path.read_text())
    else:
        system, pass_reports = _train(cut_sets, train_split, lang, cfg, passes, dev, num_jobs, exp_dir, ref_map,
                                      train_config, timing)
    system_sha256 = file_sha256(model_path)
    counts = None
    reports: dict[str, dict] = {}
    for split in splits:
        out_cuts = output_dir / f"{corpus}_cuts_{split}.jsonl.gz"
        h5 = output_dir / f"{corpus}_frame_labels_{split}.h5"
        split_key = {"gmm_sha256": system_sha256, "cuts_sha256": file_sha256(cuts_dir / out_cuts.name)}
        stale = check_artifact(out_cuts, split_key)
        if stale is None:
            logging.info(f"{out_cuts} was aligned by this aligner from these cuts: {split} already aligned")
            aligned = CutSet.from_file(out_cuts) or CutSet.from_cuts([])  # lhotse reads an empty file as None
            skipped = None
        else:
            if out_cuts.exists():
                logging.warning(f"realigning {split}: {stale}")
            out_cuts.unlink(missing_ok=True)  # nothing stale may look finished while this run works
            artifact_key_path(out_cuts).unlink(missing_ok=True)
            start = time.perf_counter()
            try:
                aligned, skipped = _align_split(cut_sets[split], lang, system, dev, num_jobs, output_dir, corpus,
                                                split)
            except Exception as exc:  # h5py wraps a full disk in its own errors: stop, do not skip
                raise_if_output_error(exc, h5)
                raise
            timing[f"align_{split}"] = time.perf_counter() - start
            timing[f"audio_{split}"] = sum(c.duration for c in cut_sets[split])
            skipped_path = exp_dir / f"skipped_{split}.txt"
            write_text(skipped_path, "".join(f"{k}\t{v}\n" for k, v in sorted(skipped.items())))
            check_skipped_share(
                len(skipped), len(cut_sets[split]), max_skipped_share,
                f"alignment of {corpus} split '{split}' (skip list {skipped_path})",
            )  # fmt: skip
            with atomic_output(out_cuts) as tmp:
                aligned.to_file(tmp)
            record_artifact(out_cuts, split_key, companions=[h5])
        if split == train_split:
            counts = pdf_counts(aligned, system.num_pdfs)
        report = score_alignments(aligned, lang, len(skipped) if skipped is not None else None, ref_map,
                                  pdf_phone=system.tree.pdf_phone)
        if report is not None:
            reports[split] = report
    if counts is not None:
        write_text(exp_dir / "pdf_counts.txt", "".join(f"{int(c)}\n" for c in counts))
    pass_reports[system.name] = {split: _headline(r) for split, r in reports.items()}
    if timing:
        write_json(exp_dir / "timing.json", timing)
    return _write_report(reports, exp_dir, pass_reports, system.name)


def json_roundtrip(obj):
    """``obj`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj))


def _read_cuts(cuts_dir: Path, corpus: str, split: str) -> CutSet:
    path = cuts_dir / f"{corpus}_cuts_{split}.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `asr-kd features` (stage 1) first")
    return CutSet.from_file(path)


def _train(cut_sets: dict[str, CutSet], train_split: str, lang: Lang, cfg: MonoConfig,
           passes: Sequence[tuple[str, TriConfig]], dev, num_jobs: int, exp_dir: Path, ref_map,
           train_config: dict, timing: dict[str, float]) -> tuple[GmmSystem, dict[str, dict]]:
    """Train mono and every pass; each is saved (``<name>.gmm.pt``) and scored on the scored splits.
    Seconds spent go into ``timing`` (``train_audio``: seconds of training audio)."""
    cuts = list(cut_sets[train_split])
    rng = np.random.default_rng(cfg.seed)
    if len(cuts) > cfg.max_utts:
        cuts = [cuts[i] for i in sorted(rng.choice(len(cuts), cfg.max_utts, replace=False))]
    skipped: dict[str, str] = {}
    start = time.perf_counter()
    utts = _load_many(cuts, lang, skipped, "load training cuts", self_loop_scale=cfg.self_loop_scale)
    timing["load"] = time.perf_counter() - start
    timing["train_audio"] = sum(u.feats.shape[0] for u in utts) * 0.01
    logging.info(f"training the aligner on {len(utts)} cuts ({sum(u.feats.shape[0] for u in utts)} frames)")
    if cfg.init == "reference":
        _set_reference_labels(utts, {c.id: c for c in cuts}, lang, ref_map)
    start = time.perf_counter()
    gmm, utts = train_monophones(utts, lang, cfg, dev, num_jobs, skipped, realign_all=bool(passes))
    timing["mono"] = time.perf_counter() - start
    logging.info(f"monophone aligner trained in {timing['mono']:.1f} s")
    mono_cfg = {k: getattr(cfg, k) for k in SEARCH_KEYS}
    system = GmmSystem("mono", gmm, {"kind": "deltas"}, ContextDependency.monophone(lang),
                       TransitionModel.from_lang(lang), lang_sha256(lang), {"pass": mono_cfg})
    systems = [system]
    for name, tri_cfg in passes:
        start = time.perf_counter()
        system = train_tri(utts, system, lang, tri_cfg, dev, num_jobs, name=name)
        timing[name] = time.perf_counter() - start
        logging.info(f"{name} trained in {timing[name]:.1f} s")
        systems.append(system)
    pass_reports: dict[str, dict] = {}
    start = time.perf_counter()
    scored = [s for s, c in cut_sets.items() if _has_reference(c)]
    for sys_ in systems:
        sys_.config["training"] = json_roundtrip(train_config)
        sys_.save(exp_dir / f"{sys_.name}.gmm.pt")
        if sys_ is not systems[-1]:
            pass_reports[sys_.name] = {
                split: _headline(_score_system(cut_sets[split], lang, sys_, dev, num_jobs, ref_map))
                for split in scored
            }
    timing["score_passes"] = time.perf_counter() - start
    write_json(exp_dir / "passes.json", pass_reports)
    system.tree.save(exp_dir / "tree.json")
    system.transitions.save(exp_dir / "transitions.json")
    system.save(exp_dir / "final.gmm.pt")
    return system, pass_reports


def train_monophones(utts: list[TrainingUtterance], lang: Lang, cfg: MonoConfig, dev, num_jobs: int,
                     skipped: dict[str, str], realign_all: bool = True):
    """``train_mono`` on ``cfg.mono_utts`` of ``utts`` (a random subset, seeded by ``cfg.seed``; all when
    0 or more), then, with ``realign_all``, the monophone alignment of every utterance (Kaldi's
    ``align_si.sh`` after ``train_mono.sh`` on a subset), which the triphone passes start from.

    Returns ``(gmm, utts)``: the utterances that carry monophone labels (an utterance that does not align
    is left out and recorded in ``skipped``)."""
    if not 0 < cfg.mono_utts < len(utts):
        return train_mono(utts, lang, cfg, dev, num_jobs), utts
    rng = np.random.default_rng(cfg.seed + 1)
    subset = [utts[i] for i in sorted(rng.choice(len(utts), cfg.mono_utts, replace=False))]
    logging.info(f"monophones: training on {len(subset)} of the {len(utts)} training cuts")
    gmm = train_mono(subset, lang, cfg, dev, num_jobs)
    if not realign_all:
        return gmm, subset
    for utt in utts:
        utt.labels = None
    realign(gmm, utts, cfg, dev, num_jobs, lang)
    kept = [u for u in utts if u.labels is not None]
    for utt in utts:
        if utt.labels is None:
            skipped[utt.id] = "no_mono_path: the monophones found no path even with the retry beam"
    logging.info(f"monophone alignment of all {len(utts)} training cuts: {len(utts) - len(kept)} unaligned, "
                 "left out of the triphone passes")
    return gmm, kept


def _set_reference_labels(utts: list[TrainingUtterance], cuts_by_id: dict, lang: Lang, ref_map) -> None:
    """The oracle start (``MonoConfig(init="reference")``): each utterance's labels from its cut's
    reference phone tier (:func:`asr_kd.align.train_mono.reference_labels`)."""
    for utt in utts:
        cut = cuts_by_id[utt.id]
        sup = cut.supervisions[0] if cut.supervisions else None
        if sup is None or not sup.alignment or "phone" not in sup.alignment:
            raise ValueError(f"cut {cut.id}: init 'reference' needs a reference 'phone' alignment tier, "
                             "and this cut has none")
        try:
            utt.labels = reference_labels(sup.alignment["phone"], utt.feats.shape[0], lang, cut.start, ref_map)
        except ValueError as exc:
            raise ValueError(f"cut {cut.id}: {exc}") from None


def _has_reference(cuts: CutSet) -> bool:
    for cut in cuts:
        sup = cut.supervisions[0] if cut.supervisions else None
        return bool(sup is not None and sup.alignment and "phone" in sup.alignment)
    return False


def _align_utts(utts: list[TrainingUtterance], lang: Lang, system: GmmSystem, dev, num_jobs: int):
    feats = [transform_gmm_features(system.transform, u.feats) for u in utts]
    pass_cfg = TriConfig(**{k: v for k, v in system.config.get("pass", {}).items() if k in SEARCH_KEYS})
    return align_system(system, [u.graph for u in utts], feats, lang, pass_cfg, dev, num_jobs)


def _score_system(cuts: CutSet, lang: Lang, system: GmmSystem, dev, num_jobs: int, ref_map) -> dict:
    """Align ``cuts`` with ``system`` in memory and score them against their reference tiers."""
    scorer = AlignmentScorer(ref_map=ref_map)
    skipped: dict[str, str] = {}
    all_cuts = list(cuts)
    by_id = {c.id: c for c in all_cuts}
    num_failed = 0
    for b in range(0, len(all_cuts), ALIGN_BATCH_CUTS):
        utts = _load_many(all_cuts[b : b + ALIGN_BATCH_CUTS], lang, skipped, f"score {system.name}", system)
        for utt, ali in zip(utts, _align_utts(utts, lang, system, dev, num_jobs)):
            if ali is None:
                num_failed += 1
                continue
            cut = by_id[utt.id]
            scorer.add([lang.phone_symbols[p] for p in ali.phone_ids], cut.supervisions[0].alignment["phone"],
                       offset=cut.start)
    return scorer.report(num_skipped=len(skipped) + num_failed)


def _headline(report: dict) -> dict:
    keys = ("num_cuts", "num_skipped", "frame_agreement", "boundary_within_10ms", "boundary_within_20ms",
            "boundary_within_40ms", "median_boundary_error_ms")
    return {k: report.get(k) for k in keys}


def _align_split(cuts: CutSet, lang: Lang, system: GmmSystem, dev, num_jobs: int,
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
            utts = _load_many(batch, lang, skipped, f"load {split} cuts", system)
            results = _align_utts(utts, lang, system, dev, num_jobs)
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


def score_alignments(cuts: CutSet, lang: Lang, num_skipped: int | None, ref_map=None,
                     pdf_phone: Sequence[int] | None = None) -> dict | None:
    """Agreement of ``frame_labels`` with the cuts' reference ``"phone"`` tiers, or None if none have one.

    ``pdf_phone``: the phone id of each pdf (a tree's ``pdf_phone``; default: the lang's monophone pdfs).
    """
    scorer = AlignmentScorer(ref_map=ref_map)
    if pdf_phone is None:
        pdf_phone = lang.pdf_to_phone_id
    phone_of_pdf = [lang.phone_symbols[i] for i in pdf_phone]
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


def _write_report(reports: dict[str, dict], exp_dir: Path, pass_reports: dict[str, dict] | None = None,
                  final_pass: str = "mono") -> dict:
    if not reports:
        return {}
    headline = reports.get("test") or reports[sorted(reports)[-1]]
    report = {**headline, "split": "test" if "test" in reports else sorted(reports)[-1], "splits": reports,
              "pass": final_pass, "passes": pass_reports or {}}
    write_json(exp_dir / "report.json", report)
    text = "\n\n".join(f"== {split} ==\n{format_report(r)}" for split, r in reports.items())
    if pass_reports:
        text += "\n\n" + format_passes(pass_reports)
    write_text(exp_dir / "report.txt", text + "\n")
    logging.info("alignment report:\n" + text)
    return report
