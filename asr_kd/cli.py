"""The ``asr-kd`` command: one subcommand per pipeline stage.

Usage::

    asr-kd prepare synth_digits --output-dir data/manifests --hours 1 --nj 2
    asr-kd prepare librispeech --corpus-dir download/LibriSpeech --output-dir data/manifests
    asr-kd download librispeech --target-dir download --dataset-parts mini_librispeech
    asr-kd features --manifest-dir data/manifests --corpus synth_digits --output-dir data/fbank --nj 2
    asr-kd lang --lexicon data/manifests/synth_digits_lexicon.txt --lang-dir data/lang
    asr-kd align --corpus synth_digits --lang-dir data/lang --exp-dir exp/synth_digits/align --nj 2
    asr-kd align-report data/ali/synth_digits_cuts_test.jsonl.gz --lang-dir data/lang
    asr-kd train --exp-dir exp/synth_digits/teacher-0 --arch tdnn --size teacher \
        --train-cuts data/ali/synth_digits_cuts_train.jsonl.gz --valid-cuts data/ali/synth_digits_cuts_dev.jsonl.gz
    asr-kd cache --teachers exp/synth_digits/teacher-*/best-valid-acc.pt --cache-dir exp/synth_digits/cache-T2.0 \
        --cuts data/ali/synth_digits_cuts_train.jsonl.gz --temperature 2 --storage dense
    asr-kd distill --exp-dir exp/synth_digits/student-kd --arch tdnn --size student \
        --cache-dir exp/synth_digits/cache-T2.0 --temperature 2 --alpha 0.5 \
        --train-cuts data/ali/synth_digits_cuts_train.jsonl.gz --valid-cuts data/ali/synth_digits_cuts_dev.jsonl.gz
    asr-kd decode --models exp/synth_digits/student-kd/best-valid-acc.pt --cuts data/ali/synth_digits_cuts_test.jsonl.gz \
        --pdf-counts exp/synth_digits/align/pdf_counts.txt --lm-cuts data/ali/synth_digits_cuts_train.jsonl.gz \
        --output-dir exp/synth_digits/decode --name student-kd --role student_kd
    asr-kd decode-gmm --gmm exp/synth_digits/align/mono.gmm.pt --cuts data/ali/synth_digits_cuts_test.jsonl.gz \
        --lm-cuts data/ali/synth_digits_cuts_train.jsonl.gz --output-dir exp/synth_digits/decode --name mono
    asr-kd report exp/synth_digits
    asr-kd export --model exp/synth_digits/student-kd/best-valid-acc.pt --output exp/synth_digits/deploy/student-kd.onnx \
        --cuts data/ali/synth_digits_cuts_dev.jsonl.gz --int8 static
    asr-kd stats --manifest-dir data/manifests --corpus synth_digits

Every subcommand only parses its arguments and calls one library function; ``asr-kd <cmd> --help``
documents each flag.
"""

from __future__ import annotations

import argparse
import logging
import sys

from asr_kd.commands import align, data, decode, deploy, kd, report
from asr_kd.commands.common import use_help_formatter
from asr_kd.guard import StageError
from asr_kd.utils import setup_logging

#: command name -> (add its parser, run it), in pipeline order
COMMANDS = {**data.COMMANDS, **align.COMMANDS, **kd.COMMANDS, **decode.COMMANDS, **deploy.COMMANDS, **report.COMMANDS}
ORDER = (
    "prepare", "download", "features", "lang", "align", "align-report", "train", "cache", "distill", "evaluate",
    "decode", "decode-gmm", "report", "export", "stats", "write-config",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr-kd",
        description="Ensemble-to-single distillation of frame-level acoustic models. "
        "One subcommand per recipe stage; see recipes/<corpus>/run.sh.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ORDER:
        COMMANDS[name][0](sub)
    use_help_formatter(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_file, logging.DEBUG if args.verbose else logging.INFO)
    try:
        COMMANDS[args.command][1](args)
    except (ValueError, FileNotFoundError, StageError) as e:
        if args.verbose:
            raise
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
