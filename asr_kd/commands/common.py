"""Arguments shared by every subcommand."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-file", type=Path, default=None, help="also append the log to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
