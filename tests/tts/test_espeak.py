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
