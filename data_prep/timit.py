"""TIMIT through lhotse's recipe, in our manifest shape, with word transcripts and reference phones.

Usage:
    from data_prep.timit import prepare_timit
    prepare_timit("/corpora/timit", "data/manifests")

Expected input: lhotse's layout ``<corpus>/data/{TRAIN,TEST}/<DR>/<SPEAKER>/<UTT>.{WAV,TXT,WRD,PHN}``
(WAV in NIST SPHERE, 16 kHz), or the LDC layout without ``data/`` (``<corpus>/TRAIN/...``), which is
presented to lhotse through a symbolic link in ``output_dir/.timit_layout/``; the manifests always
point at the real files. The dictionary ``TIMITDIC.TXT`` is looked for in ``<corpus>/``,
``<corpus>/DOC/``, ``<corpus>/data/`` and ``<corpus>/data/DOC/`` (any letter case).

Splits are lhotse's: ``TRAIN`` (all of TRAIN), ``DEV`` (the 50 standard development speakers of TEST),
``TEST`` (the 24 core-test speakers); the dialect sentences SA1/SA2 are dropped by default, as in
Kaldi's recipe. Each supervision has:

- ``text``: the normalized words of the ``.TXT`` file (sample range removed, upper case);
- alignment tier ``"phone"``: the ``.PHN`` segments with TIMIT's 61 symbols as they are
  (``h#``, ``bcl``, ``ix``, ...), start/duration in seconds (sample index / 16000), the reference
  for aligner evaluation (:data:`TIMIT_TO_ARPABET` maps them to our phones);
- alignment tier ``"word"``: the ``.WRD`` segments, words as written there (lower case).

The lexicon is ``TIMITDIC.TXT`` mapped to stress-free ARPAbet (so that it shares its phones with
CMUdict and the G2P fallback), then CMUdict, then espeak-ng G2P, for the words the dictionary lacks.

Outputs in ``output_dir``: ``timit_{recordings,supervisions}_{TRAIN,DEV,TEST}.jsonl.gz``,
``timit_lexicon.txt``, ``timit_oov.txt``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from lhotse import RecordingSet, SupervisionSet
from lhotse.recipes import download_timit as lhotse_download_timit
from lhotse.recipes import prepare_timit as lhotse_prepare_timit
from lhotse.utils import fastcopy

from asr_kd.data.g2p import cmudict_lexicon, strip_stress
from asr_kd.data.lexicon import Lexicon
from asr_kd.data.text import normalize_text
from asr_kd.guard import locked_stage
from data_prep.common import CorpusError, Manifests, finish_preparation, load_finished

logger = logging.getLogger(__name__)

CORPUS = "timit"
SPLITS = ("TRAIN", "DEV", "TEST")
DEFAULT_URL = "https://data.deepai.org/timit.zip"

#: TIMIT phone (the 61 of .PHN files and the dictionary's, stress removed) -> ARPAbet; () = silence,
#: closure or glottal stop, no phone of its own. Syllabic consonants become schwa + consonant, as in
#: CMUdict (``bottle`` = ``B AA T AH L``).
# fmt: off
TIMIT_TO_ARPABET: dict[str, tuple[str, ...]] = {
    "aa": ("AA",), "ae": ("AE",), "ah": ("AH",), "ao": ("AO",), "aw": ("AW",), "ax": ("AH",),
    "ax-h": ("AH",), "axr": ("ER",), "ay": ("AY",), "eh": ("EH",), "er": ("ER",), "ey": ("EY",),
    "ih": ("IH",), "ix": ("IH",), "iy": ("IY",), "ow": ("OW",), "oy": ("OY",), "uh": ("UH",),
    "uw": ("UW",), "ux": ("UW",),
    "b": ("B",), "ch": ("CH",), "d": ("D",), "dh": ("DH",), "dx": ("T",), "el": ("AH", "L"),
    "em": ("AH", "M"), "en": ("AH", "N"), "eng": ("AH", "NG"), "f": ("F",), "g": ("G",),
    "hh": ("HH",), "hv": ("HH",), "jh": ("JH",), "k": ("K",), "l": ("L",), "m": ("M",), "n": ("N",),
    "ng": ("NG",), "nx": ("N",), "p": ("P",), "r": ("R",), "s": ("S",), "sh": ("SH",), "t": ("T",),
    "th": ("TH",), "v": ("V",), "w": ("W",), "y": ("Y",), "z": ("Z",), "zh": ("ZH",),
    "bcl": (), "dcl": (), "gcl": (), "kcl": (), "pcl": (), "tcl": (), "q": (), "epi": (),
    "pau": (), "h#": (),
}
# fmt: on

_CLOSURE_TO_STOP = {"bcl": "B", "dcl": "D", "gcl": "G", "kcl": "K", "pcl": "P", "tcl": "T"}


def timit_reference_phone(symbol: str, sil_phone: str = "SIL") -> str:
    """Map a TIMIT .PHN symbol to the aligner's phone set, for scoring alignments against TIMIT.

    Closures become their stop (a stop's HMM covers closure and burst), pauses, epenthetic silence,
    ``h#`` and the glottal stop ``q`` become ``sil_phone``, syllabic consonants their consonant
    (``el`` -> ``L``).
    """
    if symbol in _CLOSURE_TO_STOP:
        return _CLOSURE_TO_STOP[symbol]
    mapped = TIMIT_TO_ARPABET.get(symbol, ())
    return mapped[-1] if mapped else sil_phone


_DICT_LINE = re.compile(r"^(\S+)\s+/([^/]*)/\s*$")


def download_timit(
    target_dir: Path | str = ".", force_download: bool = False, url: str = DEFAULT_URL
) -> Path:
    """Download and unzip a TIMIT copy with lhotse; return ``target_dir/timit``.

    TIMIT is licensed by the LDC: the default URL is lhotse's mirror, pass your own copy's URL
    (``file://`` works). ``force_download`` removes ``timit.zip`` and the ``timit/.completed`` marker
    first (lhotse's own flag fails on an existing archive).
    """
    target_dir = Path(target_dir)
    if force_download:
        (target_dir / "timit" / ".completed").unlink(missing_ok=True)
        (target_dir / "timit.zip").unlink(missing_ok=True)
    return lhotse_download_timit(target_dir, force_download=False, base_url=url)


def read_timit_dictionary(path: Path | str) -> Lexicon:
    """Read ``TIMITDIC.TXT`` (``word  /ph1 ph2 .../``) as an ARPAbet lexicon.

    Words are normalized (``a~`` and ``read~v_past`` become ``A`` and ``READ``; homograph variants
    are merged in file order), stress digits are removed and phones mapped by
    :data:`TIMIT_TO_ARPABET`. Lines that do not parse or use an unknown phone are logged (file:line)
    and skipped: their words then come from CMUdict or G2P.
    """
    path = Path(path)
    lexicon: Lexicon = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            match = _DICT_LINE.match(line)
            word = normalize_text(match.group(1).split("~")[0]) if match else ""
            if not match or not word or " " in word:
                logger.warning("%s:%d: expected 'word  /phones/', got %r; skipped", path, lineno, line)
                continue
            timit_phones = [strip_stress(p) for p in match.group(2).split()]
            unknown = [p for p in timit_phones if p not in TIMIT_TO_ARPABET]
            if unknown or not timit_phones:
                logger.warning("%s:%d: unknown TIMIT phone(s) %s; skipped", path, lineno, unknown)
                continue
            pron = tuple(a for p in timit_phones for a in TIMIT_TO_ARPABET[p])
            prons = lexicon.setdefault(word, [])
            if pron not in prons:
                prons.append(pron)
    return lexicon


def find_timit_dictionary(corpus_dir: Path) -> Path | None:
    """``TIMITDIC.TXT`` in ``corpus_dir``, ``DOC/``, ``data/`` or ``data/DOC/`` (any case), or None."""
    for sub in ("", "DOC", "doc", "data", "data/DOC", "data/doc"):
        directory = corpus_dir / sub
        if directory.is_dir():
            for path in sorted(directory.iterdir()):
                if path.name.lower() == "timitdic.txt" and path.is_file():
                    return path
    return None


def _lhotse_view(corpus_dir: Path, output_dir: Path) -> tuple[Path, Path]:
    """A directory in lhotse's layout (``data/TRAIN``) for ``corpus_dir``, and the ``data`` prefix
    that recording paths get there."""
    if (corpus_dir / "data" / "TRAIN").is_dir():
        return corpus_dir, corpus_dir / "data"
    if (corpus_dir / "TRAIN").is_dir():
        view = output_dir / ".timit_layout"
        view.mkdir(parents=True, exist_ok=True)
        link = view / "data"
        if link.is_symlink() and Path(os.readlink(link)) != corpus_dir:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(corpus_dir, target_is_directory=True)
        return view, link
    raise CorpusError(
        f"{corpus_dir}: expected TIMIT in lhotse's layout data/TRAIN/<DR>/<SPEAKER>/<UTT>.WAV or "
        f"the LDC layout TRAIN/<DR>/<SPEAKER>/<UTT>.WAV (upper case)"
    )


def _real_paths(recordings: RecordingSet, view_prefix: Path, real_prefix: Path) -> RecordingSet:
    old, new = str(view_prefix), str(real_prefix)
    if old == new:
        return recordings
    return RecordingSet.from_recordings(
        fastcopy(rec, sources=[fastcopy(s, source=s.source.replace(old, new, 1)) for s in rec.sources])
        for rec in recordings
    )


def _is_dialect_sentence(utterance_id: str) -> bool:
    """``FCJF0-SA1`` -> True (lhotse's ids are ``<SPEAKER>-<UTT>``)."""
    return utterance_id.rsplit("-", 1)[-1].upper().startswith("SA")


@locked_stage("prepare")  # <output_dir>/.lock-prepare: one writer; a killed run's .tmp.* removed
def prepare_timit(
    corpus_dir: Path | str,
    output_dir: Path | str,
    num_jobs: int = 1,
    drop_sa: bool = True,
    timit_dictionary: Path | str | None = None,
) -> Manifests:
    """Prepare TIMIT: lhotse's recipe (layout, TRAIN/DEV/TEST split, .PHN/.WRD tiers), then
    normalized word transcripts, the TIMITDIC-based lexicon and our files.

    Args:
        corpus_dir: the TIMIT directory (see the module docstring for the layouts).
        output_dir: where the manifests and the lexicon go.
        num_jobs: processes for lhotse's manifest building.
        drop_sa: drop the dialect sentences SA1/SA2 (spoken by every speaker).
        timit_dictionary: the dictionary to use; default: found in the corpus, else CMUdict alone.

    Returns:
        ``{"TRAIN": {...}, "DEV": {...}, "TEST": {...}}``; re-running with the outputs present just
        loads them.
    """
    corpus_dir, output_dir = Path(corpus_dir).absolute(), Path(output_dir)
    finished = load_finished(CORPUS, SPLITS, output_dir)
    if finished is not None:
        return finished
    if not corpus_dir.is_dir():
        raise CorpusError(f"TIMIT corpus directory {corpus_dir} does not exist")
    lhotse_dir, view_prefix = _lhotse_view(corpus_dir, output_dir)
    real_prefix = corpus_dir / "data" if lhotse_dir == corpus_dir else corpus_dir
    logger.info("Preparing TIMIT from %s", corpus_dir)
    raw = lhotse_prepare_timit(lhotse_dir, output_dir=None, num_phones=60, num_jobs=num_jobs)

    manifests: Manifests = {}
    for split in SPLITS:
        recordings = _real_paths(raw[split]["recordings"], view_prefix, real_prefix)
        supervisions = raw[split]["supervisions"]
        if drop_sa:
            supervisions = supervisions.filter(lambda s: not _is_dialect_sentence(s.id))
        manifests[split] = {
            "recordings": recordings,
            "supervisions": SupervisionSet.from_segments(supervisions),
        }
        logger.info("TIMIT %s: %d utterances from lhotse", split, len(manifests[split]["supervisions"]))

    dictionaries = [cmudict_lexicon()]
    dict_path = Path(timit_dictionary) if timit_dictionary is not None else find_timit_dictionary(
        corpus_dir
    )
    if dict_path is not None:
        dictionaries.insert(0, read_timit_dictionary(dict_path))
        logger.info("TIMIT lexicon: %s (%d words), then CMUdict", dict_path, len(dictionaries[0]))
    else:
        logger.warning("No TIMITDIC.TXT found in %s: lexicon from CMUdict and G2P", corpus_dir)
    prepared, _ = finish_preparation(CORPUS, manifests, output_dir, dictionaries=dictionaries)
    return prepared
