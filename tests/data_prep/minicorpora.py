"""Miniature copies of LibriSpeech, TIMIT and yesno in their real directory layouts, built offline.

Audio is espeak-ng speech (a second or two per utterance), resampled from 22050 Hz with torchaudio.
Each corpus has a few deliberately broken items; the constants below say what a correct preparation
keeps, so the tests can assert exact numbers.
"""

from __future__ import annotations

import logging
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from asr_kd.data.g2p import ESPEAK_TO_ARPABET
from asr_kd.tts.espeak import PAUSE_PHONEMES, EspeakNG, get_espeak

# ----------------------------------------------------------------------------------------- LibriSpeech
#: part -> speaker/chapter -> [(utterance number, transcript line text or None for an id-only line)]
LIBRISPEECH_TRANSCRIPTS: dict[str, dict[tuple[str, str], list[tuple[str, str | None]]]] = {
    "dev-clean-2": {
        ("1272", "128104"): [
            ("0000", "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES"),
            ("0001", "NOR IS MISTER QUILTER'S MANNER LESS INTERESTING THAN HIS MATTER"),
            ("0002", "'"),  # nothing left after normalization: dropped
        ],
        ("1462", "170138"): [("0000", None)],  # id and no words: dropped (lhotse itself would crash)
    },
    "train-clean-5": {
        ("19", "198"): [
            ("0000", "NORTHANGER ABBEY"),  # OOV, G2P
            ("0001", "THE ZORBLAX WAS GREEN"),  # OOV, G2P
            ("0002", "A ЖУК SAT THERE"),  # ЖУК: G2P gives unmappable phonemes -> dropped
        ],
    },
}
#: what prepare_librispeech keeps: part -> {utterance id: normalized text}
LIBRISPEECH_EXPECTED = {
    "dev-clean-2": {
        "1272-128104-0000": "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES",
        "1272-128104-0001": "NOR IS MISTER QUILTER'S MANNER LESS INTERESTING THAN HIS MATTER",
    },
    "train-clean-5": {
        "19-198-0000": "NORTHANGER ABBEY",
        "19-198-0001": "THE ZORBLAX WAS GREEN",
    },
}
LIBRISPEECH_OOV = ["QUILTER'S", "NORTHANGER", "ZORBLAX", "ЖУК"]  # in order of first appearance
LIBRISPEECH_FAILED = ["ЖУК"]

# ----------------------------------------------------------------------------------------------- TIMIT
#: (TRAIN|TEST, dialect region, speaker, utterance, .TXT text) ; an empty text gives a .TXT with
#: only the sample range.
TIMIT_UTTERANCES = [
    ("TRAIN", "DR1", "FCJF0", "SA1", "She had your dark suit in greasy wash water all year."),
    ("TRAIN", "DR1", "FCJF0", "SX127", "Don't ask me to carry an oily rag like that."),
    ("TRAIN", "DR2", "MKLS0", "SX217", "The zorblax lined the shelf."),
    ("TRAIN", "DR2", "MKLS0", "SI1437", ""),
    ("TEST", "DR4", "FADG0", "SI1279", "Greg buys fresh milk."),  # a DEV speaker
    ("TEST", "DR1", "MDAB0", "SX139", "Who took the oily rag?"),  # a core TEST speaker
    ("TEST", "DR1", "FCMR0", "SX115", "Greg took the milk."),  # neither: lhotse drops it
]
TIMIT_EXPECTED = {
    "TRAIN": {
        "FCJF0-SX127": "DON'T ASK ME TO CARRY AN OILY RAG LIKE THAT",
        "MKLS0-SX217": "THE ZORBLAX LINED THE SHELF",
    },
    "DEV": {"FADG0-SI1279": "GREG BUYS FRESH MILK"},
    "TEST": {"MDAB0-SX139": "WHO TOOK THE OILY RAG"},
}
TIMIT_DICTIONARY = """\
; TIMITDIC.TXT (miniature): word  /phones/, stress 1 and 2 on vowels
;
an  /ae1 n/
an~  /ax n/
ask  /ae1 s k/
bottle  /b aa1 t el/
buys  /b ay1 z/
carry  /k ae1 r iy/
don't  /d ow1 n t/
fresh  /f r eh1 sh/
greg  /g r eh1 g/
like  /l ay1 k/
me  /m iy1/
milk  /m ih1 l k/
oily  /oy1 l iy/
rag  /r ae1 g/
shelf  /sh eh1 l f/
that  /dh ae1 t/
the  /dh ax/
the~  /dh iy1/
to  /t uw1/
took  /t uh1 k/
who  /hh uw1/
broken line without slashes
"""


def _synthesize(espeak: EspeakNG, text: str, sample_rate: int, voice: str = "en-us"):
    """espeak-ng speech for ``text`` at ``sample_rate``.

    Returns ``(audio float32, [(mnemonic, start sample, word index or -1)])``.
    """
    synthesis = espeak.synthesize(text, voice=voice)
    audio = torchaudio.functional.resample(
        torch.from_numpy(synthesis.audio), synthesis.sample_rate, sample_rate
    ).numpy()
    ratio = sample_rate / synthesis.sample_rate
    events = [(p.phone, int(round(p.sample * ratio)), p.word_index) for p in synthesis.phones]
    return audio.astype(np.float32), events


def _noise(num_samples: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(num_samples) * 0.01).astype(np.float32)


def build_mini_librispeech(root: Path) -> Path:
    """Build ``root/LibriSpeech/{dev-clean-2,train-clean-5}/<spk>/<chapter>/...``.

    Returns ``root/LibriSpeech``.
    """
    espeak = get_espeak()
    corpus = Path(root) / "LibriSpeech"
    for part, chapters in LIBRISPEECH_TRANSCRIPTS.items():
        for (speaker, chapter), utterances in chapters.items():
            chapter_dir = corpus / part / speaker / chapter
            chapter_dir.mkdir(parents=True, exist_ok=True)
            lines = []
            for number, text in utterances:
                utt_id = f"{speaker}-{chapter}-{number}"
                spoken = " ".join(w for w in (text or "").split() if w.isascii() and w != "'")
                audio = _synthesize(espeak, spoken, 16000)[0] if spoken else _noise(16000, 0)
                sf.write(chapter_dir / f"{utt_id}.flac", audio, 16000)
                lines.append(f"{utt_id} {text}\n" if text is not None else f"{utt_id}\n")
            (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    return corpus


def _phn_and_wrd(events, words: list[str], num_samples: int) -> tuple[str, str]:
    """TIMIT-style .PHN and .WRD text from espeak phone events (start samples at 16 kHz)."""
    segments: list[tuple[int, str, int]] = []  # (start sample, symbol, word index or -1)
    for i, (phone, start, word) in enumerate(events):
        if phone in PAUSE_PHONEMES or phone.startswith("_"):
            symbol, word = ("h#" if i in (0, len(events) - 1) else "pau"), -1
        else:
            symbol = (ESPEAK_TO_ARPABET.get(phone) or ("AH",))[0].lower()
        if segments and start <= segments[-1][0]:
            continue  # zero length after resampling
        if start >= num_samples:
            break
        segments.append((start, symbol, word))
    if not segments or segments[0][0] != 0:
        segments.insert(0, (0, "h#", -1))
    if segments[-1][1] == "pau":
        segments[-1] = (segments[-1][0], "h#", -1)
    ends = [s for s, _, _ in segments[1:]] + [num_samples]
    phn = "".join(f"{s} {e} {sym}\n" for (s, sym, _), e in zip(segments, ends))
    spans: dict[int, list[int]] = {}  # word index -> [start, end]
    for (s, _, w), e in zip(segments, ends):
        if w >= 0:
            spans.setdefault(w, [s, e])[1] = e
    wrd = "".join(f"{s} {e} {words[w]}\n" for w, (s, e) in sorted(spans.items()) if w < len(words))
    return phn, wrd


def build_mini_timit(root: Path, layout: str = "lhotse") -> Path:
    """A tiny TIMIT: ``layout="lhotse"`` gives ``root/timit/data/TRAIN/...``,
    ``"ldc"`` gives ``root/TIMIT/TRAIN/...``.

    ``DOC/TIMITDIC.TXT`` sits in the corpus directory. Returns the corpus directory.
    """
    espeak = get_espeak()
    corpus = Path(root) / ("timit" if layout == "lhotse" else "TIMIT")
    base = corpus / "data" if layout == "lhotse" else corpus
    for seed, (part, region, speaker, utt, text) in enumerate(TIMIT_UTTERANCES):
        utt_dir = base / part / region / speaker
        utt_dir.mkdir(parents=True, exist_ok=True)
        words = [w.strip(".,?!").lower() for w in text.split()]
        if words:
            audio, events = _synthesize(espeak, " ".join(words), 16000)
            phn, wrd = _phn_and_wrd(events, words, len(audio))
        else:
            audio, phn, wrd = _noise(8000, seed), "0 8000 h#\n", ""
        sf.write(utt_dir / f"{utt}.WAV", audio, 16000, format="NIST", subtype="PCM_16")
        (utt_dir / f"{utt}.TXT").write_text(f"0 {len(audio)} {text}".rstrip() + "\n")
        (utt_dir / f"{utt}.PHN").write_text(phn)
        (utt_dir / f"{utt}.WRD").write_text(wrd)
    (corpus / "DOC").mkdir(parents=True, exist_ok=True)
    (corpus / "DOC" / "TIMITDIC.TXT").write_text(TIMIT_DICTIONARY)
    return corpus


# ----------------------------------------------------------------------------------------------- yesno
#: the 60 file patterns: 8-bit binary numbers 0, 4, 8, ..., 236 (1 = YES)
YESNO_PATTERNS = [format(i, "08b") for i in range(0, 240, 4)]


def build_mini_yesno(root: Path) -> Path:
    """``root/waves_yesno/<b>_..._<b>.wav`` (60 files, 8 kHz); returns ``root/waves_yesno``."""
    espeak = get_espeak()
    words = {bit: _synthesize(espeak, word, 8000)[0] for bit, word in (("1", "yes"), ("0", "no"))}
    gap = np.zeros(400, np.float32)
    corpus = Path(root) / "waves_yesno"
    corpus.mkdir(parents=True, exist_ok=True)
    for pattern in YESNO_PATTERNS:
        audio = np.concatenate([np.concatenate([words[b], gap]) for b in pattern])
        sf.write(corpus / f"{'_'.join(pattern)}.wav", audio, 8000, subtype="PCM_16")
    return corpus


# ------------------------------------------------------------------------------------------- archives
def tar_gz(archive: Path, source: Path, arcname: str) -> Path:
    """Pack ``source`` as ``arcname`` into ``archive`` (.tar.gz)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=arcname)
    return archive


def zip_dir(archive: Path, source: Path) -> Path:
    """Zip the contents of ``source`` (paths relative to it) into ``archive``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, path.relative_to(source).as_posix())
    return archive


# ------------------------------------------------------------------------------------------------ logs
class LogRecords(logging.Handler):
    """Collect log records at INFO and above in a ``with`` block (for module-scoped fixtures, where
    pytest's function-scoped ``caplog`` is not available)."""

    def __enter__(self) -> "LogRecords":
        self.records: list[logging.LogRecord] = []
        root = logging.getLogger()
        self._level = root.level
        root.addHandler(self)
        root.setLevel(min(self._level, logging.INFO) if self._level else logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]
