"""Transcript normalization for English corpora.

One normal form for every corpus, the form the lexicon, the language model and WER scoring all see:
upper case, words separated by single spaces, no punctuation except apostrophes inside a word
(``DON'T``, ``JOHN'S``). Hyphens and dashes separate words (``TWENTY-TWO`` -> ``TWENTY TWO``), so that
each part can be found in a pronunciation dictionary. Digits are kept as they are (no number
expansion): LibriSpeech and TIMIT transcripts spell numbers out.
"""

from __future__ import annotations

import re
import unicodedata

#: Typographic apostrophes and primes folded to ASCII ``'``.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "`": "'"})
#: Anything that is neither a letter, a digit, an apostrophe nor whitespace.
_PUNCTUATION = re.compile(r"[^\w\s']|_")
#: An apostrophe not flanked by word characters on both sides.
_EDGE_APOSTROPHE = re.compile(r"(?<![^\W_])'|'(?![^\W_])")


def normalize_text(text: str) -> str:
    """Normalize an English transcript.

    Steps: fold typographic apostrophes to ``'``; upper-case; turn every punctuation character
    (hyphens included) into a space; drop apostrophes that are not word-internal; collapse whitespace.

    >>> normalize_text("She had your dark suit in greasy wash-water all year.")
    'SHE HAD YOUR DARK SUIT IN GREASY WASH WATER ALL YEAR'
    >>> normalize_text("  'Don't,' he said ")
    "DON'T HE SAID"
    """
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES).upper()
    text = _PUNCTUATION.sub(" ", text)
    text = _EDGE_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())


def text_words(text: str) -> list[str]:
    """The words of an already normalized transcript."""
    return text.split()
