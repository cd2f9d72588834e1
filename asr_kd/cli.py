"""The ``asr-kd`` command: one subcommand per pipeline stage.

Usage::

    asr-kd prepare synth_digits --output-dir data/manifests --hours 1 --nj 2
    asr-kd prepare librispeech --corpus-dir download/LibriSpeech --output-dir data/manifests
    asr-kd download librispeech --target-dir download --dataset-parts mini_librispeech
    asr-kd features --manifest-dir data/manifests --corpus synth_digits --output-dir data/fbank --nj 2
    asr-kd lang --lexicon data/manifests/synth_digits_lexicon.txt --lang-dir data/lang
    asr-kd align --corpus synth_digits --lang-dir data/lang --exp-dir exp/synth_digits/align --nj 2
    asr-kd align-report data/ali/synth_digits_cuts_test.jsonl.gz --lang-dir data/lang
    asr-kd stats --manifest-dir data/manifests --corpus synth_digits

Every subcommand only parses its arguments and calls one library function; ``asr-kd <cmd> --help``
documents each flag.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from asr_kd.utils import setup_logging

CORPORA = ("synth_digits", "librispeech", "timit", "yesno")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-file", type=Path, default=None, help="also append the log to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


# ----------------------------------------------------------------------------------------- prepare
def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="stage 0: write Lhotse recording/supervision manifests and a lexicon for a corpus",
        description="Stage 0. Writes <corpus>_{recordings,supervisions}_<split>.jsonl.gz and "
        "<corpus>_lexicon.txt into --output-dir. Re-running skips finished splits.",
    )
    corpora = p.add_subparsers(dest="corpus", required=True, metavar="CORPUS")

    s = corpora.add_parser(
        "synth_digits",
        help="synthesize the offline connected-digits corpus with espeak-ng",
        description="Connected digit strings spoken by espeak-ng voices (train/dev/test voices "
        "disjoint) with random rate/pitch and white/pink/babble noise; exact phone alignments.",
    )
    s.add_argument("--output-dir", type=Path, default=Path("data/manifests"))
    s.add_argument("--hours", type=float, default=1.0, help="total hours over all splits (default 1.0)")
    s.add_argument("--seed", type=int, default=42, help="the corpus is a function of the seed")
    s.add_argument("--nj", type=int, default=1, help="parallel synthesis processes")
    s.add_argument(
        "--snr-db", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
        help="range of the additive-noise SNR in dB (default 0 30)",
    )  # fmt: skip
    _add_common(s)

    for name, corpus_help in (
        ("librispeech", "LibriSpeech or mini LibriSpeech on disk (lhotse recipe + CMUdict lexicon)"),
        ("timit", "TIMIT on disk (lhotse recipe; word transcripts, reference phone alignments)"),
        ("yesno", "the yesno corpus on disk (lhotse recipe)"),
    ):
        c = corpora.add_parser(name, help=corpus_help, description=corpus_help)
        c.add_argument("--corpus-dir", type=Path, required=True, help="where the corpus was downloaded")
        c.add_argument("--output-dir", type=Path, default=Path("data/manifests"))
        c.add_argument("--nj", type=int, default=1)
        if name == "librispeech":
            c.add_argument(
                "--dataset-parts", nargs="+", default=["mini_librispeech"],
                help="'mini_librispeech', 'auto', or part names such as train-clean-100 dev-clean",
            )  # fmt: skip
        _add_common(c)


def _run_prepare(args) -> None:
    if args.corpus == "synth_digits":
        from data_prep.synth_digits import prepare_synth_digits

        extra = {"snr_db": tuple(args.snr_db)} if args.snr_db else {}
        prepare_synth_digits(args.output_dir, hours=args.hours, seed=args.seed, num_jobs=args.nj, **extra)
    elif args.corpus == "librispeech":
        from data_prep.librispeech import prepare_librispeech

        parts = args.dataset_parts[0] if len(args.dataset_parts) == 1 else args.dataset_parts
        prepare_librispeech(args.corpus_dir, args.output_dir, dataset_parts=parts, num_jobs=args.nj)
    elif args.corpus == "timit":
        from data_prep.timit import prepare_timit

        prepare_timit(args.corpus_dir, args.output_dir, num_jobs=args.nj)
    elif args.corpus == "yesno":
        from data_prep.yesno import prepare_yesno

        prepare_yesno(args.corpus_dir, args.output_dir)


# ---------------------------------------------------------------------------------------- download
def _add_download(sub) -> None:
    p = sub.add_parser(
        "download",
        help="download a real corpus (needs internet; not used by the offline default recipe)",
        description="Download a corpus with lhotse's downloader into --target-dir.",
    )
    p.add_argument("corpus", choices=("librispeech", "timit", "yesno"))
    p.add_argument("--target-dir", type=Path, default=Path("download"))
    p.add_argument(
        "--dataset-parts", nargs="+", default=["mini_librispeech"],
        help="librispeech only: 'mini_librispeech', 'all', or part names",
    )  # fmt: skip
    p.add_argument("--force-download", action="store_true")
    _add_common(p)


def _run_download(args) -> None:
    if args.corpus == "librispeech":
        from data_prep.librispeech import download_librispeech

        parts = args.dataset_parts[0] if len(args.dataset_parts) == 1 else args.dataset_parts
        download_librispeech(args.target_dir, dataset_parts=parts, force_download=args.force_download)
    elif args.corpus == "timit":
        from data_prep.timit import download_timit

        download_timit(args.target_dir, force_download=args.force_download)
    else:
        from data_prep.yesno import download_yesno

        download_yesno(args.target_dir, force_download=args.force_download)


# ---------------------------------------------------------------------------------------- features
def _add_features(sub) -> None:
    p = sub.add_parser(
        "features",
        help="stage 1: 80-dim fbank into LilcomChunkyWriter and <corpus>_cuts_<split>.jsonl.gz",
        description="Stage 1. Validates every recording/supervision (missing, unreadable or empty "
        "audio, empty transcripts are skipped and counted; other sample rates are resampled), "
        "computes lhotse Fbank features and writes <output-dir>/<corpus>_cuts_<split>.jsonl.gz.",
    )
    p.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    p.add_argument("--corpus", required=True, help=f"manifest prefix, e.g. one of {', '.join(CORPORA)}")
    p.add_argument("--output-dir", type=Path, default=Path("data/fbank"))
    p.add_argument("--splits", nargs="+", default=None, help="default: every split found")
    p.add_argument("--nj", type=int, default=1, help="parallel processes (CPU)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'")
    p.add_argument("--num-mel-bins", type=int, default=80)
    p.add_argument("--sampling-rate", type=int, default=16000, help="audio is resampled to this (Hz)")
    _add_common(p)


def _run_features(args) -> None:
    from asr_kd.data.features import compute_fbank

    compute_fbank(
        args.manifest_dir, args.corpus, args.output_dir, splits=args.splits, num_jobs=args.nj,
        device=args.device, num_mel_bins=args.num_mel_bins, sampling_rate=args.sampling_rate,
    )  # fmt: skip


# -------------------------------------------------------------------------------------------- lang
def _add_lang(sub) -> None:
    p = sub.add_parser(
        "lang",
        help="stage 2: phones, words, lexicon, HMM topology and pdf ids in a lang directory",
        description="Stage 2. Builds data/lang from a lexicon: phones.txt, words.txt, lexicon.txt, "
        "lexicon_disambig.txt, the HMM topology and the pdf-id table (lang.json is written last).",
    )
    p.add_argument("--lexicon", type=Path, required=True, help="lexicon.txt: WORD PHONE1 PHONE2 ...")
    p.add_argument("--lang-dir", type=Path, default=Path("data/lang"))
    p.add_argument("--num-states", type=int, default=3, help="HMM states per non-silence phone")
    p.add_argument("--num-sil-states", type=int, default=3, help="HMM states of each silence phone")
    _add_common(p)


def _run_lang(args) -> None:
    from asr_kd.data.lang import prepare_lang

    lang = prepare_lang(
        args.lexicon, args.lang_dir, num_states=args.num_states, num_sil_states=args.num_sil_states
    )
    logging.info(f"{args.lang_dir}: {len(lang.phones)} phones, {lang.num_pdfs} pdfs")


# ------------------------------------------------------------------------------------------- align
def _add_align(sub) -> None:
    p = sub.add_parser(
        "align",
        help="stage 3: flat-start forced alignment of every cut to per-frame pdf ids",
        description="Stage 3. Trains a monophone GMM-HMM from a flat start (equal alignment, then "
        "Viterbi re-estimation with kaldi-decoder) on the train split, aligns every split and writes "
        "<output-dir>/<corpus>_cuts_<split>.jsonl.gz with a `frame_labels` TemporalArray (int32 pdf "
        "ids, exact, HDF5), pdf_counts.txt (priors) and, where the cuts carry reference phone tiers, "
        "report.json/report.txt into --exp-dir.",
    )
    p.add_argument("--cuts-dir", type=Path, default=Path("data/fbank"), help="where stage 1 wrote the cuts")
    p.add_argument("--corpus", required=True)
    p.add_argument("--lang-dir", type=Path, default=Path("data/lang"))
    p.add_argument("--output-dir", type=Path, default=Path("data/ali"))
    p.add_argument("--exp-dir", type=Path, required=True, help="e.g. exp/synth_digits/align")
    p.add_argument("--splits", nargs="+", default=["train", "dev", "test"])
    p.add_argument("--train-split", default="train", help="the split the aligner is trained on")
    p.add_argument("--nj", type=int, default=1, help="parallel Viterbi processes")
    p.add_argument("--device", default="auto", help="GMM computations: 'auto', 'cpu', 'cuda'")
    p.add_argument("--num-iters", type=int, default=25)
    p.add_argument("--total-gauss", type=int, default=1000, help="Gaussians over all pdfs at the end")
    p.add_argument("--max-utts", type=int, default=3000, help="training subset size (utterances)")
    p.add_argument(
        "--acoustic-scale", type=float, default=0.1,
        help="GMM log-likelihood scale against HMM transition costs in the Viterbi search",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--reference-phones", choices=("same", "timit"), default="same",
        help="how reference 'phone' tiers map to the lang's phones for the report: 'same' (synthetic "
        "corpora) or 'timit' (61 TIMIT phones -> ARPAbet, closures joined to their stops)",
    )  # fmt: skip
    _add_common(p)


def _reference_map(name: str):
    if name == "timit":
        from data_prep.timit import timit_reference_phone

        return timit_reference_phone
    return None


def _run_align(args) -> None:
    from asr_kd.align.stage import align_corpus
    from asr_kd.align.train_mono import MonoConfig

    cfg = MonoConfig(
        num_iters=args.num_iters, total_gauss=args.total_gauss, max_utts=args.max_utts,
        acoustic_scale=args.acoustic_scale, seed=args.seed,
    )  # fmt: skip
    align_corpus(
        args.cuts_dir, args.corpus, args.lang_dir, args.output_dir, args.exp_dir, splits=args.splits,
        train_split=args.train_split, num_jobs=args.nj, device=args.device, config=cfg,
        ref_map=_reference_map(args.reference_phones),
    )  # fmt: skip


def _add_align_report(sub) -> None:
    p = sub.add_parser(
        "align-report",
        help="score aligned cuts against their reference phone alignments",
        description="Frame-level phone agreement, share of phone boundaries within 10/20/40 ms and the "
        "worst phones, for cuts with `frame_labels` and a reference 'phone' alignment tier.",
    )
    p.add_argument("cuts", type=Path, help="aligned cuts (stage 3 output)")
    p.add_argument("--lang-dir", type=Path, default=Path("data/lang"))
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.add_argument("--reference-phones", choices=("same", "timit"), default="same")
    _add_common(p)


def _run_align_report(args) -> None:
    from lhotse import CutSet

    from asr_kd.align.report import format_report
    from asr_kd.align.stage import score_alignments
    from asr_kd.data.lang import Lang
    from asr_kd.utils import write_json

    report = score_alignments(
        CutSet.from_file(args.cuts), Lang.load(args.lang_dir), None, _reference_map(args.reference_phones)
    )
    if report is None:
        raise ValueError(f"no cut in {args.cuts} has a reference 'phone' alignment tier")
    if args.json:
        write_json(args.json, report)
    print(format_report(report))


# ------------------------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="stage 4: train one frame-level acoustic model (a teacher) with cross-entropy",
        description="Stage 4. Cross-entropy on frame_labels (padding ignored), AdamW with warm-up and "
        "decay, SpecAugment, validation frame accuracy per epoch, best/last checkpoints, tensorboard. "
        "Resumes an interrupted run from <exp-dir>/last.pt and does nothing when <exp-dir>/done exists. "
        "For several processes or GPUs start it with torchrun (DDP).",
    )
    p.add_argument("--exp-dir", type=Path, required=True, help="e.g. exp/synth_digits/teacher-0")
    p.add_argument("--arch", default="dnn", help="dnn, tdnn, blstm or conformer")
    p.add_argument("--size", default="teacher", help="student-small, student, teacher, teacher-large, ...-xl")
    p.add_argument("--lang-dir", type=Path, default=Path("data/lang"), help="gives the number of pdfs")
    p.add_argument("--train-cuts", type=Path, default=Path("data/ali/synth_digits_cuts_train.jsonl.gz"))
    p.add_argument("--valid-cuts", type=Path, default=Path("data/ali/synth_digits_cuts_dev.jsonl.gz"))
    p.add_argument("--num-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--no-spec-augment", action="store_true")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto")
    _add_common(p)


def _run_train(args) -> None:
    from asr_kd.data.lang import Lang
    from asr_kd.datamodule import DataConfig
    from asr_kd.models import ModelConfig
    from asr_kd.train import TrainConfig, train

    model = ModelConfig(arch=args.arch, size=args.size, num_pdfs=Lang.load(args.lang_dir).num_pdfs, dropout=args.dropout)
    data = DataConfig(
        train_cuts=str(args.train_cuts), valid_cuts=str(args.valid_cuts), max_duration=args.max_duration,
        num_workers=args.num_workers, spec_augment=not args.no_spec_augment,
    )  # fmt: skip
    train(TrainConfig(
        exp_dir=str(args.exp_dir), model=model, data=data, num_epochs=args.num_epochs, lr=args.lr,
        warmup_steps=args.warmup_steps, seed=args.seed, device=args.device,
    ))  # fmt: skip


# ------------------------------------------------------------------------------------------- cache
def _add_cache(sub) -> None:
    p = sub.add_parser(
        "cache",
        help="stage 5: cache the teacher ensemble's temperature-softened posteriors on the cuts",
        description="Stage 5. Runs the teachers over the cuts (no augmentation), combines their "
        "posteriors at temperature T (arithmetic or geometric mean, optional weights) and stores them "
        "per frame, top-k sparse or dense fp16, as lhotse custom fields; writes "
        "<cache-dir>/cuts_soft_<split>.jsonl.gz and metadata.json. Resumable and sharded by rank.",
    )
    p.add_argument("--teachers", type=Path, nargs="+", required=True, help="teacher checkpoints")
    p.add_argument("--cuts", type=Path, required=True, help="aligned training cuts (stage 3 output)")
    p.add_argument("--cache-dir", type=Path, required=True)
    p.add_argument("--split", default="train", help="name of the cached split")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--combination", choices=("arithmetic", "geometric"), default="arithmetic")
    p.add_argument("--weights", type=float, nargs="+", default=None, help="one per teacher; default uniform")
    p.add_argument("--storage", choices=("topk", "dense"), default="topk")
    p.add_argument("--k", type=int, default=16, help="pdfs kept per frame with --storage topk")
    p.add_argument("--num-shards", type=int, default=8)
    p.add_argument("--rank", type=int, default=0, help="this process's rank when several produce shards")
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16, help="cuts per forward pass")
    p.add_argument("--device", default="auto")
    _add_common(p)


def _run_cache(args) -> None:
    from asr_kd.kd.teachers import build_cache

    build_cache(
        args.teachers, args.cuts, args.cache_dir, split=args.split, temperature=args.temperature,
        combination=args.combination, weights=args.weights, storage=args.storage, k=args.k,
        num_shards=args.num_shards, rank=args.rank, world_size=args.world_size,
        batch_size=args.batch_size, device=args.device,
    )  # fmt: skip


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="frame accuracy of models, of their mean and of their ensemble on aligned cuts",
        description="Frame accuracy (arg-max posterior == frame label over non-padding frames) of every "
        "model, the mean over models, and the ensemble (arithmetic mean of posteriors, T=1).",
    )
    p.add_argument("--models", type=Path, nargs="+", required=True, help="checkpoints")
    p.add_argument("--cuts", type=Path, nargs="+", required=True, help="cuts with frame_labels")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--device", default="auto")
    _add_common(p)


def _run_evaluate(args) -> None:
    from asr_kd.kd.teachers import frame_accuracies
    from asr_kd.utils import write_json

    results = [frame_accuracies(args.models, c, device=args.device) for c in args.cuts]
    if args.json:
        write_json(args.json, results)
    for r in results:
        print(f"{r['cuts']}: {r['num_frames']} frames")
        for name, acc in r["models"].items():
            print(f"  {100 * acc:6.2f}%  {name}")
        print(f"  {100 * r['mean_model']:6.2f}%  mean of the models")
        if r["ensemble"] is not None:
            print(f"  {100 * r['ensemble']:6.2f}%  ensemble")


# ------------------------------------------------------------------------------------------- stats
def _add_stats(sub) -> None:
    p = sub.add_parser(
        "stats",
        help="corpus statistics per split (hours, utterances, speakers, words, phones)",
        description="Prints per-split statistics of a prepared corpus as JSON.",
    )
    p.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    p.add_argument("--corpus", required=True)
    _add_common(p)


def _run_stats(args) -> None:
    from asr_kd.data.stats import corpus_statistics

    json.dump(corpus_statistics(args.manifest_dir, args.corpus), sys.stdout, indent=2)
    sys.stdout.write("\n")


COMMANDS = {
    "prepare": (_add_prepare, _run_prepare),
    "download": (_add_download, _run_download),
    "features": (_add_features, _run_features),
    "lang": (_add_lang, _run_lang),
    "align": (_add_align, _run_align),
    "align-report": (_add_align_report, _run_align_report),
    "train": (_add_train, _run_train),
    "cache": (_add_cache, _run_cache),
    "evaluate": (_add_evaluate, _run_evaluate),
    "stats": (_add_stats, _run_stats),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr-kd",
        description="Ensemble-to-single distillation of frame-level acoustic models. "
        "One subcommand per recipe stage; see recipes/<corpus>/run.sh.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_file, logging.DEBUG if args.verbose else logging.INFO)
    try:
        COMMANDS[args.command][1](args)
    except (ValueError, FileNotFoundError) as e:
        if args.verbose:
            raise
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
