"""espeak-ng called in-process through ctypes (libespeak-ng bundled by ``espeakng-loader``).

One :class:`EspeakNG` per process: the library keeps global state (voice, parameters, callback), so it
is neither thread-safe nor re-entrant. Parallel synthesis uses one process per job, each with its own
instance (see :mod:`data_prep.synth_digits`).

The synchronous API delivers audio (16-bit mono at :attr:`EspeakNG.sample_rate`, 22050 Hz) together with
events; a phoneme event carries the phoneme's mnemonic and the absolute sample index at which it starts,
which gives exact phone-level ground truth for the synthetic corpora.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# espeak_EVENT_TYPE values (speak_lib.h)
_EV_LIST_TERMINATED = 0
_EV_WORD = 1
_EV_END = 5
_EV_MSG_TERMINATED = 6
_EV_PHONEME = 7

# espeak_PARAMETER values
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000

#: espeak-ng's pause phonemes (and ``;``, a short pause it emits after some words); all map to the
#: silence phone of a lang directory. Every other phoneme name starting with "_" is a pause as well.
PAUSE_PHONEMES = frozenset({"_", "_:", "_!", "_;", "_^_", "||", "|", ";"})


def is_pause(phoneme: str) -> bool:
    """Whether an espeak-ng phoneme name (stress stripped) is a pause."""
    return phoneme in PAUSE_PHONEMES or phoneme.startswith("_")
#: Stress and syllable marks that espeak-ng prefixes to phoneme names.
STRESS_MARKS = "'," + "%="


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class PhoneEvent:
    """One phoneme as espeak-ng spoke it: ``sample`` is its start (samples at 22050 Hz)."""

    phone: str  # espeak-ng mnemonic with stress marks removed, e.g. "E", "oU", "_"
    sample: int
    word_index: int  # 0-based index of the word it belongs to; -1 for pauses outside any word


@dataclass(frozen=True)
class Synthesis:
    """The result of one :meth:`EspeakNG.synthesize` call."""

    audio: np.ndarray  # (num_samples,) float32 in [-1, 1] at ``sample_rate``
    sample_rate: int
    phones: list[PhoneEvent]
    words: list[str]  # the words of the input text, in order


def strip_stress(phoneme: str) -> str:
    """Remove espeak-ng stress/syllable marks: ``"'oU"`` -> ``"oU"``."""
    return phoneme.lstrip(STRESS_MARKS)


class EspeakError(RuntimeError):
    pass


class EspeakNG:
    """Synthesizer and phonemizer over one in-process libespeak-ng.

    libespeak-ng has one global state: a second instance takes over the audio callback and the first
    one then synthesizes nothing. Use :func:`get_espeak` for the process-wide instance.
    """

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        # espeak-ng's wavegen also draws from libc's rand()
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"))
        self._lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self._lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_int,
            ctypes.c_int,
        ]
        data_path = espeakng_loader.get_data_path()
        sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), _INIT_PHONEME_EVENTS
        )
        if sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed with data path {data_path}")
        self.sample_rate = int(sample_rate)
        self.data_path = Path(data_path)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, str]] = []
        self._callback = _SynthCallback(self._on_audio)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _on_audio(self, wav, num_samples, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EV_PHONEME:
                name = ev.id.string.decode("utf-8", errors="replace")
                self._events.append((ev.type, ev.text_position, ev.sample, name))
            elif ev.type == _EV_WORD:
                self._events.append((ev.type, ev.text_position, ev.sample, ""))
            i += 1
        return 0

    def set_voice(self, voice: str) -> None:
        """Select a voice by name, with an optional variant: ``"en-us"``, ``"en-gb-scotland+f3"``."""
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EspeakError(f"espeak-ng has no voice {voice!r}")
            self._voice = voice

    def synthesize(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        word_gap: int = 0,
        seed: int | None = None,
    ) -> Synthesis:
        """Speak ``text`` (space-separated words) and return audio plus phoneme events.

        Args:
            rate: speaking rate in words per minute (80-450).
            pitch: base pitch, 0-100.
            pitch_range: pitch range, 0-100 (0 = monotone).
            word_gap: extra pause between words, in units of 10 ms.
            seed: seeds espeak-ng's noise generators (its own and libc's ``rand``) first. Repeated
                calls in one process still drift (the voicing generator keeps state); a fresh
                process replaying the same seeded calls reproduces the samples exactly.
        """
        words = text.split()
        if not words:
            raise ValueError("cannot synthesize an empty text")
        self.set_voice(voice)
        for param, value in (
            (_PARAM_RATE, rate),
            (_PARAM_PITCH, pitch),
            (_PARAM_RANGE, pitch_range),
            (_PARAM_WORDGAP, word_gap),
            (_PARAM_VOLUME, 100),
        ):
            self._lib.espeak_SetParameter(param, int(value), 0)
        if seed is not None:
            self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
            self._libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
        self._chunks, self._events = [], []
        data = " ".join(words).encode()
        status = self._lib.espeak_Synth(
            data, len(data) + 1, 0, 0, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
        )
        if status != 0:
            raise EspeakError(f"espeak_Synth failed ({status}) for {text!r} with voice {voice!r}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        phones = self._phone_events(words, " ".join(words))
        return Synthesis(
            audio=audio.astype(np.float32) / 32768.0,
            sample_rate=self.sample_rate,
            phones=phones,
            words=words,
        )

    def _phone_events(self, words: list[str], text: str) -> list[PhoneEvent]:
        # 1-based character offset of each word in ``text`` -> word index
        starts, pos = [], 1
        for w in words:
            starts.append(pos)
            pos += len(w) + 1
        phones: list[PhoneEvent] = []
        current = -1
        for ev_type, text_pos, sample, name in self._events:
            if ev_type == _EV_WORD:
                current = int(np.searchsorted(starts, text_pos, side="right")) - 1
                continue
            phone = strip_stress(name)
            if not phone:
                continue
            word_index = -1 if is_pause(phone) else current
            phones.append(PhoneEvent(phone=phone, sample=int(sample), word_index=word_index))
        return phones

    def phonemize(self, word: str, voice: str = "en-us") -> list[str]:
        """Grapheme-to-phoneme: espeak-ng phonemes of ``word``, stress marks removed.

        Returns an empty list when espeak-ng produces no phonemes (e.g. for punctuation).
        """
        self.set_voice(voice)
        buf = ctypes.c_char_p(word.encode())
        pieces: list[str] = []
        separator = ord("_")
        # The call consumes the text clause by clause and advances ``buf`` until it is NULL.
        while buf.value:
            out = self._lib.espeak_TextToPhonemes(ctypes.byref(buf), _CHARS_UTF8, separator << 8)
            if out is None:
                break
            pieces.append(out.decode("utf-8", errors="replace"))
        phones = []
        for piece in pieces:
            for token in piece.replace(" ", "_").split("_"):
                token = strip_stress(token)
                if token and not is_pause(token):
                    phones.append(token)
        return phones


_INSTANCE: EspeakNG | None = None


def get_espeak() -> EspeakNG:
    """The process-wide :class:`EspeakNG` (created on first use)."""
    global _INSTANCE
    if _INSTANCE is None:
        _INSTANCE = EspeakNG()
    return _INSTANCE


def list_voice_variants(data_path: Path | None = None) -> list[str]:
    """Names of the voice variants shipped with espeak-ng (``m1``, ``f3``, ``klatt4``, ...)."""
    if data_path is None:
        import espeakng_loader

        data_path = Path(espeakng_loader.get_data_path())
    return sorted(p.name for p in (Path(data_path) / "voices" / "!v").iterdir() if p.is_file())
