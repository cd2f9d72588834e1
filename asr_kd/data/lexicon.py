"""Pronunciation lexicons in Kaldi's ``lexicon.txt`` format.

One pronunciation per line, ``WORD PHONE1 PHONE2 ...``; a word with several pronunciations has several
lines. Order is kept: the first pronunciation of a word is its most frequent one where counts exist.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

from asr_kd.utils import write_text

#: word -> its pronunciations, each a tuple of phones
Lexicon = dict[str, list[tuple[str, ...]]]


class LexiconError(ValueError):
    pass


def read_lexicon(path: Path | str) -> Lexicon:
    """Read a ``lexicon.txt``; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise LexiconError(f"lexicon file {path} does not exist")
    lexicon: Lexicon = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise LexiconError(
                    f"{path}:{lineno}: expected 'WORD PHONE1 [PHONE2 ...]', got {line.strip()!r}"
                )
            word, phones = fields[0], tuple(fields[1:])
            prons = lexicon.setdefault(word, [])
            if phones not in prons:
                prons.append(phones)
    if not lexicon:
        raise LexiconError(f"lexicon file {path} is empty")
    return lexicon


def write_lexicon(path: Path | str, lexicon: Mapping[str, Iterable[tuple[str, ...]]]) -> None:
    """Write ``lexicon`` sorted by word (pronunciation order kept), atomically."""
    lines = []
    for word in sorted(lexicon):
        for pron in lexicon[word]:
            if not pron:
                raise LexiconError(f"word {word!r} has an empty pronunciation")
            lines.append(f"{word} {' '.join(pron)}\n")
    write_text(path, "".join(lines))


def lexicon_from_counts(
    counts: Mapping[str, Counter], min_share: float = 0.0
) -> Lexicon:
    """Build a lexicon from observed pronunciation counts.

    Args:
        counts: word -> Counter of pronunciation tuples.
        min_share: drop pronunciations seen in less than this share of the word's tokens
            (the most frequent one is always kept).
    """
    lexicon: Lexicon = {}
    for word, counter in counts.items():
        total = sum(counter.values())
        ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        lexicon[word] = [p for i, (p, c) in enumerate(ranked) if i == 0 or c / total >= min_share]
    return lexicon
