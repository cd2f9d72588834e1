"""Arguments shared by every subcommand."""

from __future__ import annotations

import argparse
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default (``asr-kd <command> --help``); required flags, switches and
    flags whose default is None (their help says what None means) show none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def use_help_formatter(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and all its subcommand parsers the :class:`HelpFormatter`."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                use_help_formatter(sub)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-file", type=Path, default=None, help="also append the log to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_max_skipped_share(p: argparse.ArgumentParser, what: str) -> None:
    """``--max-skipped-share``: a stage (or split) that skipped a larger share of its ``what`` fails."""
    from asr_kd.guard import DEFAULT_MAX_SKIPPED_SHARE

    p.add_argument(
        "--max-skipped-share", type=float, default=DEFAULT_MAX_SKIPPED_SHARE,
        help=f"fail (after writing the skip list) when more than this share of a split's {what} is skipped",
    )  # fmt: skip
