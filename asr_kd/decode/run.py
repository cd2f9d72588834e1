"""The decode stage: frame accuracy and WER of one model or an ensemble on any CutSet with features.

Usage:
    asr-kd decode --models exp/my_recipe/student-kd/best-valid-acc.pt \\
        --cuts data/ali/my_corpus_cuts_test.jsonl.gz --pdf-counts exp/my_recipe/align/pdf_counts.txt \\
        --lm-cuts data/ali/my_corpus_cuts_train.jsonl.gz --lang-dir data/lang \\
        --output-dir exp/my_recipe/decode --name student-kd --role student_kd --nj 4

    from asr_kd.decode.run import decode_cuts
    record = decode_cuts(["exp/my_recipe/teacher-0/best-valid-acc.pt"], "data/ali/my_corpus_cuts_test.jsonl.gz",
                         "data/lang", "exp/my_recipe/decode", "teacher-0",
                         pdf_counts="exp/my_recipe/align/pdf_counts.txt",
                         lm_cuts="data/ali/my_corpus_cuts_train.jsonl.gz")

Models are checkpoints or ONNX files of ``asr-kd export`` (:mod:`asr_kd.models.onnx`, run by onnxruntime),
optionally chunk by chunk (``chunk_frames``, :mod:`asr_kd.models.streaming`). Posteriors: one model's softmax, or for several the arithmetic mean of their softmax posteriors at
T = 1 (``ensemble_posteriors``). Hybrid scores per frame: ``acoustic_scale * (log p(s|x) - log prior(s))``,
priors from the aligner's ``pdf_counts.txt``; Viterbi beam search (kaldi-decoder) over
``<lang_dir>/HCLG-<key>.fst``, built (and cached under a key of what it is built from) from an
``lm_order``-gram LM on the ``lm_cuts`` transcripts.
The reference of a cut is its supervisions' text joined (already in the lexicon's normal form, as the
prepare stage writes it). Cuts with ``frame_labels`` also give frame accuracy (arg-max posterior ==
label, over the frames both have); cuts whose features (or labels) cannot be read are skipped and listed.

Files in ``output_dir`` for a decoding ``name``:
    recogs-<name>.txt, errs-<name>.txt, wer-summary-<name>.txt, utt-errors-<name>.tsv   (asr_kd.decode.scoring)
    skipped-<name>.txt      ``<cut id>\\t<reason>`` per skipped cut (empty when none)
    no-final-<name>.txt     the cut ids whose search ended without a final state, even after the retries
    result-<name>.json      the decode record (asr_kd.decode.record), written last: its presence means finished

A second call with the same models (sha256), cuts, name, role and decoding settings returns the
existing record without decoding again (``force=True`` redoes it).
"""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lhotse import CutSet
from tqdm import tqdm

from asr_kd.batch import FrameAccuracy, collate_frames, model_logits
from asr_kd.decode.decoder import (
    DEFAULT_ACOUSTIC_SCALE,
    DEFAULT_BEAM,
    DEFAULT_MAX_ACTIVE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIOR_FLOOR,
    compute_log_priors,
    hybrid_loglikes,
    search_batch,
)
from asr_kd.decode.record import load_record, summary_line, write_record
from asr_kd.decode.scoring import write_results
from asr_kd.guard import remove_stale_temporaries, stage_lock
from asr_kd.utils import resolve_device, write_text

#: log-likelihood values held before a decoding round (4 bytes each): bounds memory on large test sets
MAX_PENDING_VALUES = 1 << 27
#: result fields that must be equal for an existing result to be reused (plus decode_config, less num_jobs)
_MATCH_KEYS = ("name", "role", "models", "checkpoint_sha256", "test_set")


def reference_text(cut) -> str:
    """The cut's supervisions' text, joined, whitespace collapsed."""
    return " ".join(" ".join((s.text or "") for s in cut.supervisions).split())


def read_pdf_counts(path: Path | str) -> np.ndarray:
    """``pdf_counts.txt`` of the align stage (one frame count per line, line i = pdf i): ``(num_pdfs,)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pdf counts {path} do not exist: the align stage writes <exp-dir>/pdf_counts.txt")
    try:
        counts = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as e:
        raise ValueError(f"{path}: expected one integer frame count per line ({e})") from e
    return counts


def read_lm_text(path: Path | str) -> list[str]:
    """The sentences of an LM text file: one per line, whitespace collapsed, empty lines dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LM text {path} does not exist (expected one sentence per line)")
    lines = [" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"LM text {path} has no non-empty line (expected one sentence per line)")
    return lines


def decoding_graph(lang_dir: Path | str, lm_cuts: Path | str | None, lm_order: int, lm_text: Path | str | None = None,
                   tree=None, transitions=None, self_loop_scale: float | None = None) -> tuple[Path, dict]:  # fmt: skip
    """``(<lang_dir>/HCLG-<key>.fst, its info)``: built on the ``lm_text`` sentences or the ``lm_cuts``
    transcripts (cached by what it is built from, the tree and transitions included:
    :mod:`asr_kd.decode.graph`), or, when both are None, the one cached graph of an ``lm_order``-gram LM
    and that context dependency in ``lang_dir`` (an error when there is none, or several).
    ``self_loop_scale``: of the HMM transition costs (:func:`asr_kd.decode.graph.make_hclg`; None: the
    default, 0.1, as Kaldi's mkgraph.sh)."""
    from asr_kd.data.lang import Lang
    from asr_kd.decode.graph import DEFAULT_SELF_LOOP_SCALE, cached_graphs, context_dependency, ensure_decoding_graph

    if self_loop_scale is None:
        self_loop_scale = DEFAULT_SELF_LOOP_SCALE

    lang_dir = Path(lang_dir)
    if lm_cuts is not None and lm_text is not None:
        raise ValueError(f"give the LM text as lm_cuts ({lm_cuts}) or lm_text ({lm_text}), not both")
    if lm_cuts is not None or lm_text is not None:
        texts = read_lm_text(lm_text) if lm_text is not None else [reference_text(c) for c in CutSet.from_file(lm_cuts)]
        return ensure_decoding_graph(lang_dir, texts, order=lm_order, tree=tree, transitions=transitions,
                                     self_loop_scale=self_loop_scale)
    context = context_dependency(Lang.load(lang_dir), tree, transitions)
    graphs = [(p, i) for p, i in cached_graphs(lang_dir) if i.get("context_dependency", "monophone") == context
              and i.get("self_loop_scale", 1.0) == float(self_loop_scale)]
    matching = [(p, i) for p, i in graphs if i.get("lm_order") == lm_order]
    if not matching:
        found = ", ".join(f"{p.name} ({i.get('lm_order')}-gram)" for p, i in graphs) or "none"
        raise FileNotFoundError(f"no decoding graph HCLG-<key>.fst of a {lm_order}-gram LM in {lang_dir} (cached: "
                                f"{found}): pass the training cuts as lm_cuts (--lm-cuts) to build one")  # fmt: skip
    if len(matching) > 1:
        raise ValueError(f"{len(matching)} cached {lm_order}-gram graphs in {lang_dir} "
                         f"({', '.join(p.name for p, _ in matching)}), built on other LM texts: pass lm_cuts "
                         f"(--lm-cuts) to say which")  # fmt: skip
    return matching[0]


def _member_info(paths: Sequence[Path | str]) -> tuple[dict[str, Any], list]:
    """The result fields that describe the models, and what each file holds (checkpoint or ONNX:
    :func:`asr_kd.models.onnx.describe_model_file`)."""
    from asr_kd.models.onnx import describe_model_file

    files = [describe_model_file(p) for p in paths]
    configs = [f.model_config for f in files]
    info: dict[str, Any] = {"models": [str(p) for p in paths], "checkpoint_sha256": [f.sha256 for f in files],
                            "temperature": None, "alpha": None, "train_fraction": None, "seed": None,
                            "transfer": False}  # fmt: skip
    if len(files) == 1:
        train_config = files[0].train_config
        data = train_config.get("data") if isinstance(train_config.get("data"), dict) else {}
        seed = train_config.get("seed")
        info.update(temperature=train_config.get("temperature"), alpha=train_config.get("alpha"),
                    train_fraction=train_config.get("train_fraction", data.get("train_fraction")),
                    seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
                    transfer=bool(train_config.get("transfer_cuts") or data.get("transfer_cuts")),
                    arch=configs[0].arch, size=configs[0].size)  # fmt: skip
    else:
        info.update(arch=[c.arch for c in configs], size=[c.size for c in configs])
    return info, files


class _Scorer:
    """Forward passes, frame accuracy and the search, over batches of cuts."""

    def __init__(self, models, device, log_priors: np.ndarray | None, graph_path: Path, words: list[str], search: dict,
                 num_jobs: int, auto_flush: bool = True, acoustic=None):  # fmt: skip
        self.auto_flush = auto_flush  # False: keep every utterance's log-likelihoods (acoustic-scale tuning)
        self.models, self.device, self.log_priors, self.words = models, device, log_priors, words
        self.graph_path, self.search, self.num_jobs = graph_path, search, num_jobs
        self.accuracy = FrameAccuracy()
        self.frames = 0
        self.audio_seconds = self.forward_seconds = self.decode_seconds = 0.0
        self.results: dict[str, tuple[str, str]] = {}
        self.skipped: dict[str, str] = {}
        self.no_final: list[str] = []  # cut ids whose search ended without a final state (after retries)
        self.retries = 0  # searches again with a doubled beam
        #: None: the models' hybrid scores; else a function batch -> (B, T, P) log-likelihoods (a GMM system)
        self.acoustic = acoustic
        self._pending: list[tuple[str, str, np.ndarray]] = []  # (cut id, reference, loglikes)

    @torch.no_grad()
    def forward(self, cuts: list) -> None:
        """Posteriors of a batch of cuts; frame accuracy; log-likelihoods queued for the search."""
        start = time.perf_counter()
        batch, skipped = collate_frames(cuts, labels="optional", skip_unreadable=True)
        for cut_id, reason in skipped.items():
            self.skipped[cut_id] = reason
            logging.warning(f"{cut_id}: skipped, its features or labels cannot be loaded ({reason})")
        if batch is None:
            return
        if self.acoustic is not None:  # log-likelihoods themselves (GMM): no priors
            log_post = self.acoustic(batch)
        elif len(self.models) == 1:
            log_post = torch.log_softmax(model_logits(self.models, batch, self.device)[0], dim=-1)
        else:
            from asr_kd.kd.ensemble import ensemble_posteriors

            logits = model_logits(self.models, batch, self.device)  # (K, B, T, P)
            post = ensemble_posteriors(logits, temperature=1.0, mode="arithmetic")  # (B, T, P)
            log_post = post.clamp_min(torch.finfo(post.dtype).tiny).log()
        self.accuracy.update(log_post, batch["frame_labels"])
        log_post = log_post.cpu().numpy()
        by_id = {c.id: c for c in cuts}
        for i, (cut_id, n) in enumerate(zip(batch["cut_ids"], batch["lengths"].tolist())):
            cut = by_id[cut_id]
            self.frames += n
            self.audio_seconds += float(cut.duration)
            loglikes = log_post[i, :n] if self.acoustic is not None else hybrid_loglikes(log_post[i, :n], self.log_priors)
            self._pending.append((cut_id, reference_text(cut), loglikes))
        self.forward_seconds += time.perf_counter() - start
        if self.auto_flush and sum(ll.size for _, _, ll in self._pending) > MAX_PENDING_VALUES:
            self.flush()

    def take_pending(self) -> list[tuple[str, str, np.ndarray]]:
        """The queued ``(cut id, reference, log-likelihoods)`` not yet decoded; the queue is emptied."""
        pending, self._pending = self._pending, []
        return pending

    def flush(self) -> None:
        """Decode the queued utterances."""
        if not self._pending:
            return
        start = time.perf_counter()
        hyps = search_batch(self.graph_path, [ll for _, _, ll in self._pending], num_jobs=self.num_jobs, **self.search)
        self.decode_seconds += time.perf_counter() - start
        for (cut_id, ref, _), hyp in zip(self._pending, hyps, strict=True):
            self.results[cut_id] = (ref, " ".join(self.words[w] for w in hyp.word_ids))
            self.retries += hyp.retries
            if not hyp.reached_final:
                self.no_final.append(cut_id)
        self._pending = []


#: acoustic scales tried by default when tuning on a development set (Kaldi scores LM weights 7-17: 1/17-1/7)
DEFAULT_TUNE_SCALES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)


def tune_acoustic_scale(scorer: "_Scorer", cuts: list, scales: Sequence[float], batch_size: int, name: str,
                        penalties: Sequence[float] = (0.0,)) -> dict:  # fmt: skip
    """Decode ``cuts`` at every scale of ``scales`` and every word insertion penalty of ``penalties``
    (Kaldi's score.sh grid of LM weights and penalties); the setting of lowest WER (the smallest scale,
    then the smallest penalty, on ties).

    Returns ``{"best": scale, "best_word_penalty": penalty, "wer_by_scale": {str(scale): wer},
    "no_final_by_scale": {str(scale): number of cuts whose search ended without a final state},
    "retries_by_scale": {...}, "cuts": number of cuts}`` (the ``*_by_scale`` at the best penalty), and with
    more than one penalty ``"wer_by_penalty": {str(penalty): {str(scale): wer}}``. The forward pass runs
    once; the log-likelihoods of the whole tuning set are held in memory (a dev-sized set).
    """
    from asr_kd.decode.scoring import compute_wer

    if not scales:
        raise ValueError("acoustic-scale tuning needs at least one scale")
    for b in tqdm(range(0, len(cuts), batch_size), desc=f"tune {name}", unit="batch"):
        scorer.forward(cuts[b : b + batch_size])
    pending = scorer.take_pending()
    if not pending:
        raise ValueError("no cut of the tuning set could be loaded")
    if not penalties:
        raise ValueError("tuning needs at least one word insertion penalty (0: none)")
    wer, no_final, retries = {}, {}, {}
    for penalty in sorted(penalties):
        for scale in sorted(scales):
            search = {**scorer.search, "acoustic_scale": scale, "word_penalty": penalty}
            hyps = search_batch(scorer.graph_path, [ll for _, _, ll in pending], num_jobs=scorer.num_jobs, **search)
            results = {u: (ref, " ".join(scorer.words[w] for w in h.word_ids))
                       for (u, ref, _), h in zip(pending, hyps, strict=True)}  # fmt: skip
            key = (penalty, scale)
            wer[key] = compute_wer(results).wer
            no_final[key] = sum(not h.reached_final for h in hyps)
            retries[key] = sum(h.retries for h in hyps)
            with_penalty = f", word penalty {penalty:g}" if len(penalties) > 1 else ""
            logging.info(f"{name}: acoustic scale {scale:g}{with_penalty}: WER {100 * wer[key]:.2f}% on the tuning set")
    best_penalty, best = min(wer, key=lambda k: (wer[k], k[1], k[0]))
    tuning = {"best": best, "best_word_penalty": best_penalty,
              "wer_by_scale": {f"{s:g}": wer[best_penalty, s] for s in sorted(scales)},
              "no_final_by_scale": {f"{s:g}": no_final[best_penalty, s] for s in sorted(scales)},
              "retries_by_scale": {f"{s:g}": retries[best_penalty, s] for s in sorted(scales)}, "cuts": len(pending)}  # fmt: skip
    if len(penalties) > 1:
        tuning["wer_by_penalty"] = {f"{p:g}": {f"{s:g}": wer[p, s] for s in sorted(scales)} for p in sorted(penalties)}
    return tuning


def _reusable(path: Path, expected: dict) -> dict | None:
    """The record in ``path`` if it was made with the same models, cuts and settings, else None."""
    if not path.is_file():
        return None
    try:
        old = load_record(path)
    except ValueError as e:
        logging.info(f"{path} is not a usable decode record ({e}): decoding again")
        return None

    def settings(record: dict) -> dict:
        return {k: v for k, v in (record.get("decode_config") or {}).items() if k not in ("num_jobs", "tuning")}

    same = all(old.get(k) == expected[k] for k in _MATCH_KEYS) and settings(old) == settings(expected)
    return old if same else None


def decode_cuts(
    models: Sequence[Path | str] | Path | str,
    cuts_path: Path | str,
    lang_dir: Path | str,
    output_dir: Path | str,
    name: str,
    *,
    pdf_counts: Path | str,
    role: str | None = None,
    lm_cuts: Path | str | None = None,
    lm_order: int = 3,
    acoustic_scale: float = DEFAULT_ACOUSTIC_SCALE,
    beam: float = DEFAULT_BEAM,
    max_active: int = DEFAULT_MAX_ACTIVE,
    num_jobs: int = 1,
    device: str = "auto",
    batch_size: int = 32,
    prior_floor: float = DEFAULT_PRIOR_FLOOR,
    force: bool = False,
    tune_cuts: Path | str | None = None,
    tune_scales: Sequence[float] = DEFAULT_TUNE_SCALES,
    word_penalty: float = 0.0,
    tune_penalties: Sequence[float] = (0.0,),
    chunk_frames: int | None = None,
    cmvn: str = "utterance",
    threads: int = 0,
    lm_text: Path | str | None = None,
    tree: Path | str | None = None,
    transitions: Path | str | None = None,
    scale_beam: bool = True,
    max_retries: int = DEFAULT_MAX_RETRIES,
    decoder: str = "faster",
    self_loop_scale: float | None = None,
) -> dict:
    """Decode every cut of ``cuts_path`` with one model or an ensemble; score WER and frame accuracy.

    Args:
        models: one model file, or several (their softmax posteriors averaged at T = 1): checkpoints or
            ``.onnx`` files of ``asr-kd export`` (run by onnxruntime on the CPU), mixed as wished.
        cuts_path: any CutSet manifest with features; ``frame_labels`` where present give frame accuracy.
        lang_dir: the lang directory (words.txt; HCLG-<key>.fst is built or read there).
        output_dir: where the files of the module docstring go.
        name: the decoding's name in the file names and in the record.
        role: e.g. teacher / ensemble / student_hard / student_kd (stored as given).
        pdf_counts: the aligner's ``pdf_counts.txt``: the priors.
        lm_cuts: the training cuts, whose transcripts train the LM; None uses the one cached graph of an
            ``lm_order``-gram LM.
        lm_order: n-gram order of the LM.
        acoustic_scale, beam, max_active: the search (beam in scaled log units at the scale 0.1).
        num_jobs: decoding processes (the hypotheses do not depend on it).
        device: of the forward passes ("auto": CUDA when present).
        batch_size: cuts per forward pass.
        prior_floor: smallest prior probability.
        force: decode even if a matching ``result-<name>.json`` exists.
        tune_cuts: a development CutSet: decode it at each of ``tune_scales`` and decode ``cuts_path``
            at the scale of lowest WER (``acoustic_scale`` is then unused); the choice and every WER are
            in ``decode_config["tuning"]``. Never tune on the test set itself.
        tune_scales: the acoustic scales tried.
        word_penalty: Kaldi's word insertion penalty, added to the graph cost of every word
            (:func:`asr_kd.decode.decoder.with_word_penalty`); with ``tune_cuts``, tuned over
            ``tune_penalties`` together with the acoustic scale.
        chunk_frames: run the forward pass chunk by chunk, ``chunk_frames`` frames at a time, each chunk with
            the context its outputs need (DNN and TDNN only; :mod:`asr_kd.models.streaming`); the
            chunking and its algorithmic latency are in ``decode_config["streaming"]``. None: whole
            utterances.
        cmvn: with ``chunk_frames``, ``"utterance"`` (the model's own per-utterance CMVN: the same
            posteriors as the whole-utterance forward) or ``"running"`` (statistics of the frames received
            so far: causal).
        threads: intra-op threads of the forward pass (torch and onnxruntime; torch's setting is
            process-wide); 0 leaves the libraries' defaults.
        lm_text: a text file, one sentence per line, that trains the LM instead of ``lm_cuts``.
        tree, transitions: ``tree.json`` and ``transitions.json`` of the align stage (asr_kd.hmm) for models
            of context-dependent pdfs; None: the lang's monophone pdfs and topology.
        scale_beam, max_retries, decoder: the search settings of :func:`asr_kd.decode.decoder.search_utterance`.
        self_loop_scale: the HMM transition costs' scale in HCLG (:func:`asr_kd.decode.graph.make_hclg`;
            None: 0.1, Kaldi's default).

    Returns:
        The record written to ``result-<name>.json`` (:mod:`asr_kd.decode.record`; WER and frame accuracy
        as fractions, frame_acc None when no cut has frame labels; times in seconds; ``num_frames`` the
        decoded feature frames; ``num_no_final`` the cuts whose search ended without a final state,
        ``num_retries`` the searches again with a doubled beam).
    """
    from asr_kd.models.onnx import check_num_pdfs, num_parameters, open_model_file

    paths = [models] if isinstance(models, (str, Path)) else list(models)
    if not paths:
        raise ValueError("decode needs at least one model checkpoint, got none")
    output_dir = Path(output_dir)
    result_path = output_dir / f"result-{name}.json"
    lang, tree_obj, transitions_obj = load_hmms(lang_dir, tree, transitions)
    graph_path, graph_info = decoding_graph(lang_dir, lm_cuts, lm_order, lm_text, tree_obj, transitions_obj,
                                            self_loop_scale)
    member_info, files = _member_info(paths)
    search = search_settings(acoustic_scale, beam, max_active, scale_beam, max_retries, decoder, graph_info,
                             word_penalty)
    decode_config = {**search_config(search, tune_cuts, tune_scales, tune_penalties), "lm_order": graph_info.get("lm_order", lm_order),
                     "self_loop_scale": graph_info.get("self_loop_scale", 1.0),
                     "num_jobs": num_jobs, "prior_floor": prior_floor, "lang_dir": str(lang_dir),
                     "pdf_counts": str(pdf_counts), "lm_transcripts_sha256": graph_info.get("transcripts_sha256"),
                     "lm_text": None if lm_text is None else str(lm_text), "graph": graph_path.name,
                     "tree": None if tree is None else str(tree),
                     "transitions": None if transitions is None else str(transitions)}  # fmt: skip
    if chunk_frames is not None:
        from asr_kd.models.onnx import is_onnx_path
        from asr_kd.models.streaming import streaming_info

        onnx_files = [str(p) for p in paths if is_onnx_path(p)]
        if onnx_files:
            raise ValueError(f"chunked decoding (chunk_frames) runs checkpoints, not ONNX files {onnx_files}: their "
                             "graph normalises its whole input")  # fmt: skip
        decode_config["streaming"] = streaming_info([f.model_config for f in files], chunk_frames, cmvn)
    expected = {"name": name, "role": role, "test_set": str(cuts_path), "decode_config": decode_config, **member_info}
    old = None if force else _reusable(result_path, expected)
    if old is not None:
        logging.info(f"{result_path} already done: {summary_line(old)}")
        return old

    counts = read_pdf_counts(pdf_counts)
    want = tree_obj.num_pdfs if tree_obj is not None else lang.num_pdfs
    where = tree if tree is not None else lang_dir
    for f in files:
        check_num_pdfs(f.path, f.model_config.num_pdfs, want, where)
    if counts.shape[0] != want:
        raise ValueError(f"pdf counts disagree: {pdf_counts} has {counts.shape[0]}, {where} {want}")
    dev = resolve_device(device)
    if threads > 0:
        torch.set_num_threads(threads)
    loaded = [open_model_file(p, dev, threads=threads) for p in paths]
    if chunk_frames is not None:
        from asr_kd.models.streaming import ChunkedModel

        loaded = [ChunkedModel(m, chunk_frames, cmvn=cmvn) for m in loaded]
        info = decode_config["streaming"]
        logging.info(f"{name}: chunks of {chunk_frames} frames, context {info['left_context']} + "
                     f"{info['right_context']} frames, {cmvn} CMVN: algorithmic latency {info['latency_ms']:g} ms")  # fmt: skip
    log_priors = compute_log_priors(counts, prior_floor)

    def make_scorer(auto_flush: bool) -> _Scorer:
        return _Scorer(loaded, dev, log_priors, graph_path, lang.word_symbols, dict(search), num_jobs, auto_flush)

    return decode_and_record(make_scorer, expected, cuts_path, output_dir, name, batch_size, tune_cuts, tune_scales,
                             params=sum(num_parameters(m) for m in loaded), tune_penalties=tune_penalties)


def load_hmms(lang_dir: Path | str, tree: Path | str | None, transitions: Path | str | None):
    """``(lang, tree, transitions)``: the lang and the align stage's tree / transition model (asr_kd.hmm's
    ``ContextDependency`` / ``TransitionModel``; None where no path is given)."""
    from asr_kd.data.lang import Lang
    from asr_kd.decode.context import load_transitions, load_tree

    lang = Lang.load(lang_dir)
    return lang, None if tree is None else load_tree(tree), None if transitions is None else load_transitions(transitions)


def search_settings(acoustic_scale: float, beam: float, max_active: int, scale_beam: bool, max_retries: int,
                    decoder: str, graph_info: dict, word_penalty: float = 0.0) -> dict:  # fmt: skip
    """The keyword arguments of :func:`asr_kd.decode.decoder.search_batch` for a graph."""
    from asr_kd.decode.graph import graph_label_pdfs

    if decoder not in ("faster", "lattice"):
        raise ValueError(f"decoder must be 'faster' or 'lattice', got {decoder!r}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    return {"acoustic_scale": acoustic_scale, "beam": beam, "max_active": max_active, "scale_beam": scale_beam,
            "max_retries": max_retries, "decoder": decoder, "word_penalty": float(word_penalty),
            "extra_pdfs": graph_label_pdfs(graph_info)}  # fmt: skip


def search_config(search: dict, tune_cuts, tune_scales: Sequence[float],
                  tune_penalties: Sequence[float] = (0.0,)) -> dict:  # fmt: skip
    """The search part of a record's ``decode_config`` (with the graph's ``self_loop_scale``)."""
    config = {k: v for k, v in search.items() if k != "extra_pdfs" and not (k == "word_penalty" and v == 0.0)}
    if tune_cuts is not None:
        config.update(acoustic_scale="tuned", tune_cuts=str(tune_cuts), tune_scales=[float(x) for x in sorted(tune_scales)])
        if list(tune_penalties) != [0.0]:
            config.update(word_penalty="tuned", tune_word_penalties=[float(x) for x in sorted(tune_penalties)])
    return config


def decode_and_record(make_scorer, expected: dict, cuts_path: Path | str, output_dir: Path | str, name: str,
                      batch_size: int, tune_cuts, tune_scales: Sequence[float], params: int,
                      tune_penalties: Sequence[float] = (0.0,)) -> dict:  # fmt: skip
    """Tune the acoustic scale (with ``tune_cuts``), decode ``cuts_path``, write the files of the module
    docstring and the record (``expected`` + the figures); ``make_scorer(auto_flush)`` makes a _Scorer.

    Holds ``stage_lock(output_dir, "decode-<name>")``: a second decoding of the same name into the same
    directory is refused (``StageError``); decodings of other names may run beside it.
    """
    with stage_lock(output_dir, f"decode-{name}"):
        remove_stale_temporaries(output_dir, [f".tmp.*-{glob.escape(name)}.*"])  # of a killed decoding of this name
        return _decode_and_record(make_scorer, expected, cuts_path, output_dir, name, batch_size, tune_cuts,
                                  tune_scales, params, tune_penalties)  # fmt: skip


def _decode_and_record(make_scorer, expected: dict, cuts_path: Path | str, output_dir: Path | str, name: str,
                       batch_size: int, tune_cuts, tune_scales: Sequence[float], params: int,
                       tune_penalties: Sequence[float] = (0.0,)) -> dict:  # fmt: skip
    output_dir = Path(output_dir)
    scorer = make_scorer(True)
    if tune_cuts is not None:
        tuning = tune_acoustic_scale(make_scorer(False), list(CutSet.from_file(tune_cuts)), tune_scales, batch_size,
                                     name, tune_penalties)  # fmt: skip
        scorer.search["acoustic_scale"] = tuning["best"]
        scorer.search["word_penalty"] = tuning["best_word_penalty"]
        expected["decode_config"]["tuning"] = tuning
        logging.info(f"{name}: acoustic scale {tuning['best']:g}, word penalty {tuning['best_word_penalty']:g} "
                     f"(lowest WER on {tune_cuts})")
    cuts = list(CutSet.from_file(cuts_path))
    for b in tqdm(range(0, len(cuts), batch_size), desc=f"decode {name}", unit="batch"):
        scorer.forward(cuts[b : b + batch_size])
    scorer.flush()

    num_jobs = scorer.num_jobs
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / f"skipped-{name}.txt", "".join(f"{u}\t{r}\n" for u, r in sorted(scorer.skipped.items())))
    write_text(output_dir / f"no-final-{name}.txt", "".join(f"{u}\n" for u in sorted(scorer.no_final)))
    stats = write_results(output_dir, name, scorer.results)
    result = {
        **expected,
        "params": params,
        "frame_acc": scorer.accuracy.value,
        "wer": stats.wer, "sub": stats.sub, "ins": stats.ins, "del": stats.dels,
        "num_frames": scorer.frames, "num_words": stats.num_ref_words, "num_utts": stats.num_utts,
        "num_skipped": len(scorer.skipped),
        "num_no_final": len(scorer.no_final), "num_retries": scorer.retries,
        "audio_seconds": scorer.audio_seconds, "decode_seconds": scorer.decode_seconds,
        "forward_seconds": scorer.forward_seconds,
        "rtf": scorer.decode_seconds * num_jobs / scorer.audio_seconds if scorer.audio_seconds > 0 else None,
    }  # fmt: skip
    write_record(output_dir / f"result-{name}.json", result)
    if scorer.no_final:
        logging.warning(f"{name}: {len(scorer.no_final)} cuts ended without a final state (best partial paths used), "
                        f"listed in {output_dir / f'no-final-{name}.txt'}")  # fmt: skip
    if scorer.skipped:
        logging.warning(f"{name}: {len(scorer.skipped)} cuts skipped, listed in {output_dir / f'skipped-{name}.txt'}")
    logging.info(summary_line(result))
    return result
