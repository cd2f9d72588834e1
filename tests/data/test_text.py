"""Transcript normalization: exact expected strings."""

import pytest

from asr_kd.data.text import normalize_text, text_words


@pytest.mark.parametrize(
    "raw, expected",
    [
        # LibriSpeech: already normalized, left alone
        (
            "NOR IS MISTER QUILTER'S MANNER LESS INTERESTING THAN HIS MATTER",
            "NOR IS MISTER QUILTER'S MANNER LESS INTERESTING THAN HIS MATTER",
        ),
        # TIMIT .TXT text (after the sample range): case and punctuation
        (
            "She had your dark suit in greasy wash water all year.",
            "SHE HAD YOUR DARK SUIT IN GREASY WASH WATER ALL YEAR",
        ),
        ("Don't ask me to carry an oily rag like that.", "DON'T ASK ME TO CARRY AN OILY RAG LIKE THAT"),
        ('"Oh," she said, "it\'s fine!"', "OH SHE SAID IT'S FINE"),
        ("Who took the oily rag?", "WHO TOOK THE OILY RAG"),
        # hyphens and dashes separate words
        ("a well-known twenty-two--year run", "A WELL KNOWN TWENTY TWO YEAR RUN"),
        # only word-internal apostrophes survive; typographic ones are folded
        ("'em rock'n'roll dogs' 'quoted'", "EM ROCK'N'ROLL DOGS QUOTED"),
        ("it\u2019s John\u2019s", "IT'S JOHN'S"),
        # whitespace of every kind collapses
        ("  spaced \t out\nline  ", "SPACED OUT LINE"),
        # digits stay (no number expansion); underscores are punctuation
        ("room 101_b", "ROOM 101 B"),
        # nothing but punctuation: empty
        ("' -- ...", ""),
        ("", ""),
        # non-ASCII letters are upper-cased and kept
        ("naïve café жук", "NAÏVE CAFÉ ЖУК"),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_normalize_is_idempotent() -> None:
    once = normalize_text("Even then, if she took one step forward he could catch her.")
    assert once == "EVEN THEN IF SHE TOOK ONE STEP FORWARD HE COULD CATCH HER"
    assert normalize_text(once) == once


def test_text_words() -> None:
    assert text_words("SHE HAD YOUR") == ["SHE", "HAD", "YOUR"]
    assert text_words("") == []
