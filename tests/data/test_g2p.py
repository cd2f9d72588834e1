"""CMUdict lexicon with espeak-ng G2P fallback."""

import logging
import random

import pytest

from asr_kd.data.g2p import (
    ARPABET_PHONES,
    ESPEAK_TO_ARPABET,
    build_lexicon,
    cmudict_lexicon,
    espeak_to_arpabet,
    g2p_word,
    strip_stress,
)
from asr_kd.tts.espeak import EspeakNG, get_espeak


@pytest.fixture(scope="module")
def espeak() -> EspeakNG:
    return get_espeak()


def test_strip_stress() -> None:
    assert [strip_stress(p) for p in ("AH0", "EY1", "OW2", "K")] == ["AH", "EY", "OW", "K"]


def test_cmudict_known_words_exact() -> None:
    cmu = cmudict_lexicon()
    assert cmu["YES"] == [("Y", "EH", "S")]
    assert cmu["NO"] == [("N", "OW")]
    # all variants, in CMUdict's order, stress stripped, duplicates after stripping merged
    assert cmu["READ"] == [("R", "EH", "D"), ("R", "IY", "D")]
    assert cmu["TOMATO"] == [("T", "AH", "M", "EY", "T", "OW"), ("T", "AH", "M", "AA", "T", "OW")]
    assert cmu["THE"] == [("DH", "AH"), ("DH", "IY")]
    assert cmu["DON'T"] == [("D", "OW", "N", "T"), ("D", "OW", "N")]
    assert all(p in ARPABET_PHONES for prons in cmu.values() for pron in prons for p in pron)


def test_table_targets_are_arpabet() -> None:
    assert len(ARPABET_PHONES) == 39
    assert {p for phones in ESPEAK_TO_ARPABET.values() for p in phones} <= ARPABET_PHONES


@pytest.mark.parametrize("voice", ["en-us", "en"])
def test_every_mnemonic_espeak_emits_is_mapped(espeak: EspeakNG, voice: str) -> None:
    words = sorted(cmudict_lexicon())
    sample = random.Random(0).sample(words, 4000)
    seen = {m for w in sample for m in espeak.phonemize(w.lower(), voice)}
    assert len(seen) > 50
    assert seen - set(ESPEAK_TO_ARPABET) == set()


def test_espeak_to_arpabet() -> None:
    assert espeak_to_arpabet(["b", "V", "?", "n-"]) == ("B", "AH", "T", "AH", "N")  # button
    assert espeak_to_arpabet(["b", "0", "t#", "@L"]) == ("B", "AA", "T", "AH", "L")  # bottle
    # linking r after a rhotic vowel is not doubled
    assert espeak_to_arpabet(["d", "3", "r-", "I", "N"]) == ("D", "ER", "IH", "NG")
    assert espeak_to_arpabet(["o@", "r"]) == ("AO", "R")
    assert espeak_to_arpabet(["i:", ";", "@"]) == ("IY", "AH")
    with pytest.raises(KeyError, match="'E:'"):
        espeak_to_arpabet(["Z", "E:"])


def test_g2p_word(espeak: EspeakNG) -> None:
    assert g2p_word("YES", espeak) == ("Y", "EH", "S")
    assert g2p_word("ЖУК", espeak) == ()  # espeak reads Cyrillic with unmapped phonemes


def test_build_lexicon_fallback_and_counts(espeak: EspeakNG, tmp_path, caplog) -> None:
    words = ["YES", "NO", "ZORBLAX", "YES", "READ", "ЖУК", "ZORBLAX", "FLURPISH"]
    oov_file = tmp_path / "corpus_oov.txt"
    with caplog.at_level(logging.INFO):
        lexicon, stats = build_lexicon(words, oov_file=oov_file, espeak=espeak)
    assert stats.num_words == 6
    assert stats.num_in_vocab == 3
    assert stats.oov_words == ["ZORBLAX", "ЖУК", "FLURPISH"]
    assert stats.num_oov == 3
    assert stats.failed_words == ["ЖУК"]
    assert stats.num_failed == 1
    assert lexicon["YES"] == [("Y", "EH", "S")]
    assert lexicon["READ"] == [("R", "EH", "D"), ("R", "IY", "D")]
    assert "ЖУК" not in lexicon
    for word in ("ZORBLAX", "FLURPISH"):
        (pron,) = lexicon[word]
        assert pron and set(pron) <= ARPABET_PHONES
    assert lexicon["ZORBLAX"][0][:2] == ("Z", "AO")
    lines = oov_file.read_text().splitlines()
    assert lines == [
        "ZORBLAX " + " ".join(lexicon["ZORBLAX"][0]),
        "ЖУК",
        "FLURPISH " + " ".join(lexicon["FLURPISH"][0]),
    ]
    summary = [
        r for r in caplog.records if r.levelno == logging.INFO and "out of dictionary" in r.message
    ]
    assert len(summary) == 1 and "3 out of dictionary" in summary[0].message
    assert "ZORBLAX" in summary[0].message and str(oov_file) in summary[0].message
    assert any(r.levelno == logging.WARNING and "ЖУК" in r.message for r in caplog.records)


def test_build_lexicon_dictionary_priority(tmp_path) -> None:
    own = {"THE": [("DH", "IY")], "ZORBLAX": [("Z", "AO", "R")]}
    lexicon, stats = build_lexicon(
        ["THE", "ZORBLAX", "NO"], dictionaries=[own, cmudict_lexicon()], oov_file=tmp_path / "o.txt"
    )
    assert lexicon == {"THE": [("DH", "IY")], "ZORBLAX": [("Z", "AO", "R")], "NO": [("N", "OW")]}
    assert stats.num_oov == 0 and stats.num_in_vocab == 3
    assert (tmp_path / "o.txt").read_text() == ""
