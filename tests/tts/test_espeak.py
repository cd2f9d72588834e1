import subprocess
import sys

import numpy as np
import pytest

from asr_kd.tts.espeak import get_espeak, list_voice_variants, strip_stress


@pytest.fixture(scope="module")
def tts():
    return get_espeak()


def test_strip_stress():
    assert strip_stress("'oU") == "oU"
    assert strip_stress(",E") == "E"
    assert strip_stress("i:") == "i:"


def test_phonemize_known_words(tts):
    assert tts.phonemize("seven", voice="en-us") == ["s", "E", "v", "@", "n"]
    assert tts.phonemize("three", voice="en-us") == ["T", "r", "i:"]
    assert tts.phonemize("...") == []


def test_synthesize_events_are_ordered_and_cover_words(tts):
    syn = tts.synthesize("seven oh three", voice="en-us+f3", word_gap=5)
    assert syn.sample_rate == 22050
    assert syn.audio.dtype == np.float32 and 0.5 < syn.audio.size / syn.sample_rate < 3.0
    samples = [p.sample for p in syn.phones]
    assert samples == sorted(samples) and samples[-1] <= syn.audio.size
    spoken = [[p.phone for p in syn.phones if p.word_index == w] for w in range(3)]
    assert spoken == [["s", "E", "v", "@", "n"], ["oU"], ["T", "r", "i:"]]


def test_unknown_voice_is_an_error(tts):
    with pytest.raises(RuntimeError, match="no voice 'xx-nonexistent'"):
        tts.synthesize("one", voice="xx-nonexistent")


def test_voice_variants_listed():
    variants = list_voice_variants()
    assert {"m1", "f1", "klatt", "whisper"} <= set(variants) and len(variants) >= 50


_SCRIPT = """
import hashlib
from asr_kd.tts.espeak import get_espeak
tts = get_espeak()
h = hashlib.sha256()
for voice in ("en-us+klatt4", "en-gb-x-rp+whisper", "en+m3"):
    h.update(tts.synthesize("nine four", voice=voice, rate=150, seed=7).audio.tobytes())
print(h.hexdigest())
"""


def test_fresh_process_with_seed_is_deterministic():
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    assert run() == run()


def test_split_merged_words_by_hand():
    from asr_kd.tts.espeak import PhoneEvent, Synthesis
    from asr_kd.tts.tiers import alignment_tiers, split_merged_words

    # "map of the": espeak-ng sent no word event for "the"; its D @2 arrive as word 1's
    events = [("m", 0, 0), ("a", 100, 0), ("p", 200, 0), ("V", 300, 1), ("v", 400, 1), ("D", 500, 1),
              ("@2", 600, 1), ("_", 700, -1)]  # fmt: skip
    syn = Synthesis(
        np.zeros(800, np.float32),
        800,
        [PhoneEvent(*e) for e in events],
        ["map", "of", "the"],
    )
    assert alignment_tiers(syn, 800, 800).startswith("word_without_phones: word 2")
    pron = {"the": ["D", "@"], "of": ["A", "v"]}.__getitem__  # "of" alone does not match what was spoken
    # @2 and @ differ: no repair unless the comparison maps them together
    assert split_merged_words(syn, pron).phones == syn.phones
    fixed = split_merged_words(syn, pron, same=lambda a, b: a.rstrip("2") == b)
    assert [p.word_index for p in fixed.phones] == [0, 0, 0, 1, 1, 2, 2, -1]
    _, words = alignment_tiers(fixed, 800, 800)
    assert [(w.symbol, w.start, w.duration) for w in words] == [
        ("MAP", 0.0, 0.375),
        ("OF", 0.375, 0.25),
        ("THE", 0.625, 0.25),
    ]
    # "in the" before a vowel: D i: where "the" alone is D @; the previous word's own phones decide
    before_vowel = Synthesis(
        syn.audio, 800, [PhoneEvent(p, 100 * i, 0) for i, p in enumerate(["I", "n", "D", "i:"])], ["in", "the"]
    )
    prons = {"in": ["I", "n"], "the": ["D", "@"], "of": ["V", "v"]}.__getitem__
    assert [p.word_index for p in split_merged_words(before_vowel, prons).phones] == [0, 0, 1, 1]
    wrong_own = Synthesis(before_vowel.audio, 800, before_vowel.phones, ["of", "the"])
    assert split_merged_words(wrong_own, prons).phones == wrong_own.phones
    # a previous word no longer than the pronunciation is never emptied
    short = Synthesis(
        syn.audio, 800, [PhoneEvent("D", 0, 0), PhoneEvent("@", 100, 0)], ["of", "the"]
    )
    assert split_merged_words(short, {"the": ["D", "@"], "of": []}.__getitem__).phones == short.phones
    # "at once" with a pause inside: a# t _ w V n s, all sent as word 0's (the pause as no word's)
    events = [("a#", 0, 0), ("t", 100, 0), ("_", 200, -1), ("w", 300, 0), ("V", 400, 0), ("n", 500, 0), ("s", 600, 0)]
    at_once = Synthesis(np.zeros(700, np.float32), 700, [PhoneEvent(*e) for e in events], ["at", "once"])
    fixed = split_merged_words(at_once, {"once": ["w", "V", "n", "s"]}.__getitem__)
    assert [p.word_index for p in fixed.phones] == [0, 0, -1, 1, 1, 1, 1]
