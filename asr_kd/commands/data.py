"""Stages 0-2: prepare, download, features, lang; and corpus statistics."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from asr_kd.commands.common import add_common, add_max_skipped_share

CORPORA = ("synth_digits", "synth_rm", "librispeech", "timit", "yesno")


# ----------------------------------------------------------------------------------------- prepare
def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="stage 0: write Lhotse recording/supervision manifests and a lexicon for a corpus",
        description="Stage 0. Writes <corpus>_{recordings,supervisions}_<split>.jsonl.gz and "
        "<corpus>_lexicon.txt into --output-dir. Re-running skips finished splits. Holds a lock on "
        "--output-dir (a second run on it is refused) and removes a killed run's temporaries.",
    )
    corpora = p.add_subparsers(dest="corpus", required=True, metavar="CORPUS")

    s = corpora.add_parser(
        "synth_digits",
        help="synthesize the offline connected-digits corpus with espeak-ng",
        description="Connected digit strings spoken by espeak-ng voices (train/dev/test voices "
        "disjoint) with random rate/pitch and white/pink/babble noise; exact phone alignments.",
    )
    s.add_argument("--output-dir", type=Path, default=Path("data/manifests"), help="where the manifests, wavs and "
                   "lexicon are written")
    s.add_argument("--hours", type=float, default=1.0, help="total hours over all splits")
    s.add_argument("--seed", type=int, default=42, help="the corpus is a function of the seed")
    s.add_argument("--nj", type=int, default=1, help="parallel synthesis processes")
    s.add_argument(
        "--snr-db", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
        help="range of the additive-noise SNR in dB (default: the corpus config's 0 30)",
    )  # fmt: skip
    add_common(s)

    r = corpora.add_parser(
        "synth_rm",
        help="synthesize the read-speech corpus (~1,100-word naval resource-management sentences)",
        description="Sentences from data_prep/synth_rm_grammar.txt spoken by espeak-ng voices (train/dev/test "
        "voices disjoint, test sentences disjoint from train and the LM text), noise as synth_digits; "
        "an unlabeled 'transfer' split, the LM text synth_rm_lm_text.txt, phones mapped by "
        "data_prep/synth_rm_phone_map.txt.",
    )
    r.add_argument("--output-dir", type=Path, default=Path("data/manifests"), help="where the manifests, wavs, "
                   "lexicon and LM text are written")
    r.add_argument("--hours", type=float, default=2.0, help="total hours over all splits (train/dev/test/transfer "
                   "shares 0.5/0.06/0.28/0.16)")
    r.add_argument("--seed", type=int, default=42, help="the corpus is a function of the seed")
    r.add_argument("--nj", type=int, default=1, help="parallel synthesis processes")
    r.add_argument("--clean-copies", action="store_true",
                   help="also write noise-free parallel recordings as the corpus synth_rm_clean (default: off)")
    r.add_argument("--lm-sentences", type=int, default=10000, help="sentences of the LM text")
    add_common(r)

    for name, corpus_help in (
        ("librispeech", "LibriSpeech or mini LibriSpeech on disk (lhotse recipe + CMUdict lexicon)"),
        ("timit", "TIMIT on disk (lhotse recipe; word transcripts, reference phone alignments)"),
        ("yesno", "the yesno corpus on disk (lhotse recipe)"),
    ):
        c = corpora.add_parser(name, help=corpus_help, description=corpus_help)
        c.add_argument("--corpus-dir", type=Path, required=True, help="where the corpus was downloaded")
        c.add_argument("--output-dir", type=Path, default=Path("data/manifests"), help="where the manifests and "
                       "lexicon are written")
        c.add_argument("--nj", type=int, default=1, help="parallel processes")
        if name == "librispeech":
            c.add_argument(
                "--dataset-parts", nargs="+", default=["mini_librispeech"],
                help="'mini_librispeech', 'auto', or part names such as train-clean-100 dev-clean",
            )  # fmt: skip
        add_common(c)


def _run_prepare(args) -> None:
    """The corpus's prepare function (each holds the ``prepare`` lock on its output directory)."""
    if args.corpus == "synth_digits":
        from data_prep.synth_digits import prepare_synth_digits

        extra = {"snr_db": tuple(args.snr_db)} if args.snr_db else {}
        prepare_synth_digits(args.output_dir, hours=args.hours, seed=args.seed, num_jobs=args.nj, **extra)
    elif args.corpus == "synth_rm":
        from data_prep.synth_rm import prepare_synth_rm

        prepare_synth_rm(args.output_dir, hours=args.hours, seed=args.seed, num_jobs=args.nj,
                         clean_copies=args.clean_copies, lm_sentences=args.lm_sentences)  # fmt: skip
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
    p.add_argument("corpus", choices=("librispeech", "timit", "yesno"), help="the corpus to download")
    p.add_argument("--target-dir", type=Path, default=Path("download"), help="the corpus is unpacked here")
    p.add_argument(
        "--dataset-parts", nargs="+", default=["mini_librispeech"],
        help="librispeech only: 'mini_librispeech', 'all', or part names",
    )  # fmt: skip
    p.add_argument("--force-download", action="store_true", help="download again even if the files exist")
    add_common(p)


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
        "computes lhotse Fbank features and writes <output-dir>/<corpus>_cuts_<split>.jsonl.gz, then "
        "<corpus>_cuts_<split>.done.json (sizes/checksums of its files). Holds a lock on --output-dir; a rerun "
        "skips a split only when its files are as recorded. A write error (disk full, file-size limit) stops "
        "the stage; a split skipping more than --max-skipped-share fails.",
    )
    p.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"), help="stage 0's manifests")
    p.add_argument("--corpus", required=True, help=f"manifest prefix, e.g. one of {', '.join(CORPORA)}")
    p.add_argument("--output-dir", type=Path, default=Path("data/fbank"), help="features and cut manifests go here")
    p.add_argument("--splits", nargs="+", default=None, help="splits to process (None: every split found)")
    p.add_argument("--nj", type=int, default=1, help="parallel processes (CPU)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'")
    p.add_argument("--num-mel-bins", type=int, default=80, help="fbank dimensions")
    p.add_argument("--sampling-rate", type=int, default=16000, help="audio is resampled to this (Hz)")
    add_max_skipped_share(p, "utterances")
    add_common(p)


def _run_features(args) -> None:
    from asr_kd.data.features import compute_fbank

    compute_fbank(
        args.manifest_dir, args.corpus, args.output_dir, splits=args.splits, num_jobs=args.nj,
        device=args.device, num_mel_bins=args.num_mel_bins, sampling_rate=args.sampling_rate,
        max_skipped_share=args.max_skipped_share,
    )  # fmt: skip


# -------------------------------------------------------------------------------------------- lang
def _add_lang(sub) -> None:
    p = sub.add_parser(
        "lang",
        help="stage 2: phones, words, lexicon, HMM topology and pdf ids in a lang directory",
        description="Stage 2. Builds data/lang from a lexicon: phones.txt, words.txt, lexicon.txt, "
        "lexicon_disambig.txt, the HMM topology and the pdf-id table (lang.json is written last, with the "
        "sizes and checksums of the other files). Holds a lock on --lang-dir; an existing lang dir is reused "
        "only when built from the same lexicon and config and its files are as recorded, else rebuilt.",
    )
    p.add_argument("--lexicon", type=Path, required=True, help="lexicon.txt: WORD PHONE1 PHONE2 ...")
    p.add_argument("--lang-dir", type=Path, default=Path("data/lang"), help="the lang directory to build")
    p.add_argument("--num-states", type=int, default=3, help="HMM states per non-silence phone")
    p.add_argument("--num-sil-states", type=int, default=3, help="HMM states of each silence phone")
    add_common(p)


def _run_lang(args) -> None:
    from asr_kd.data.lang import prepare_lang

    lang = prepare_lang(
        args.lexicon, args.lang_dir, num_states=args.num_states, num_sil_states=args.num_sil_states
    )
    logging.info(f"{args.lang_dir}: {len(lang.phones)} phones, {lang.num_pdfs} pdfs")


# ------------------------------------------------------------------------------------------- stats
def _add_stats(sub) -> None:
    p = sub.add_parser(
        "stats",
        help="corpus statistics per split (hours, utterances, speakers, words, phones) and lexical statistics",
        description="Prints per-split statistics of a prepared corpus as JSON; where the corpus has train and "
        "test splits and a lexicon, also 'lexical': word and phone types, words per phone, triphone types, "
        "and with an LM text the test OOV rate and the LM perplexity on test.",
    )
    p.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"), help="stage 0's manifests")
    p.add_argument("--corpus", required=True, help=f"manifest prefix, e.g. one of {', '.join(CORPORA)}")
    p.add_argument("--lm-text", type=Path, default=None,
                   help="LM text (one sentence a line) for the test OOV rate and perplexity (default: "
                   "<manifest-dir>/<corpus>_lm_text.txt when it exists)")
    p.add_argument("--lm-order", type=int, default=3, help="n-gram order of the perplexity LM")
    add_common(p)


def _run_stats(args) -> None:
    from asr_kd.data.stats import corpus_statistics, lexical_statistics

    stats = corpus_statistics(args.manifest_dir, args.corpus)
    lm_text = args.lm_text
    if lm_text is None and (args.manifest_dir / f"{args.corpus}_lm_text.txt").is_file():
        lm_text = args.manifest_dir / f"{args.corpus}_lm_text.txt"
    if {"train", "test"} <= set(stats) and (args.manifest_dir / f"{args.corpus}_lexicon.txt").is_file():
        stats["lexical"] = lexical_statistics(args.manifest_dir, args.corpus, lm_text, args.lm_order)
    json.dump(stats, sys.stdout, indent=2)
    sys.stdout.write("\n")


COMMANDS = {
    "prepare": (_add_prepare, _run_prepare),
    "download": (_add_download, _run_download),
    "features": (_add_features, _run_features),
    "lang": (_add_lang, _run_lang),
    "stats": (_add_stats, _run_stats),
}
