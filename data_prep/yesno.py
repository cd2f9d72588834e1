"""The yesno corpus (OpenSLR 1) through lhotse's recipe, in our manifest shape.

Usage:
    from data_prep.yesno import download_yesno, prepare_yesno
    corpus_dir = download_yesno("download")
    prepare_yesno(corpus_dir, "data/manifests")

Expected input (lhotse's layout): exactly 60 files ``waves_yesno/<b>_<b>_<b>_<b>_<b>_<b>_<b>_<b>.wav``,
each ``<b>`` 1 (YES) or 0 (NO), 8 kHz. lhotse sorts them by name and puts the even-indexed ones in
``train``, the odd-indexed ones in ``test`` (30 each). The audio stays at 8 kHz in the manifests; the
features stage resamples.

Outputs in ``output_dir``: ``yesno_{recordings,supervisions}_{train,test}.jsonl.gz``,
``yesno_lexicon.txt`` (YES and NO from CMUdict), ``yesno_oov.txt`` (empty).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from lhotse.recipes import download_yesno as lhotse_download_yesno
from lhotse.recipes import prepare_yesno as lhotse_prepare_yesno

from asr_kd.guard import locked_stage
from data_prep.common import CorpusError, Manifests, finish_preparation, load_finished

logger = logging.getLogger(__name__)

CORPUS = "yesno"
SPLITS = ("train", "test")
NUM_FILES = 60
DEFAULT_URL = "http://www.openslr.org/resources/1/waves_yesno.tar.gz"
_NAME = re.compile(r"^[01](_[01]){7}\.wav$")


def download_yesno(
    target_dir: Path | str = ".", force_download: bool = False, url: str = DEFAULT_URL
) -> Path:
    """Download and unpack ``waves_yesno.tar.gz`` with lhotse; return ``target_dir/waves_yesno``.

    Any URL urllib opens works, ``file://`` included. An unpacked corpus (``waves_yesno/.completed``)
    is kept unless ``force_download``, which removes the archive and that marker first.
    """
    target_dir = Path(target_dir)
    if force_download:
        (target_dir / "waves_yesno" / ".completed").unlink(missing_ok=True)
        (target_dir / "waves_yesno.tar.gz").unlink(missing_ok=True)
    return lhotse_download_yesno(target_dir, force_download=False, url=url)


def _resolve_corpus_dir(corpus_dir: Path) -> Path:
    """Accept ``waves_yesno/`` itself or its parent; check the 60 files lhotse insists on."""
    if not corpus_dir.is_dir():
        raise CorpusError(f"yesno corpus directory {corpus_dir} does not exist")
    if not list(corpus_dir.glob("*.wav")) and (corpus_dir / "waves_yesno").is_dir():
        corpus_dir = corpus_dir / "waves_yesno"
    waves = list(corpus_dir.glob("*.wav"))
    bad = sorted(p.name for p in waves if not _NAME.match(p.name))
    if bad:
        raise CorpusError(
            f"{corpus_dir}: wav names must be 8 digits 0/1 joined by '_' (e.g. 0_1_1_0_0_1_0_1.wav), "
            f"got {bad[:5]}"
        )
    if len(waves) != NUM_FILES:
        raise CorpusError(
            f"{corpus_dir}: lhotse's yesno recipe expects exactly {NUM_FILES} .wav files, "
            f"found {len(waves)}"
        )
    return corpus_dir


@locked_stage("prepare")  # <output_dir>/.lock-prepare: one writer; a killed run's .tmp.* removed
def prepare_yesno(corpus_dir: Path | str, output_dir: Path | str) -> Manifests:
    """Prepare yesno: lhotse's recipe (train/test split), then our lexicon and files.

    Args:
        corpus_dir: ``waves_yesno`` (or its parent).
        output_dir: where the manifests and the lexicon go (see the module docstring).

    Returns:
        ``{"train": {...}, "test": {...}}``; re-running with the outputs present just loads them.
    """
    output_dir = Path(output_dir)
    finished = load_finished(CORPUS, SPLITS, output_dir)
    if finished is not None:
        return finished
    corpus_dir = _resolve_corpus_dir(Path(corpus_dir).absolute())
    logger.info("Preparing yesno from %s", corpus_dir)
    raw = lhotse_prepare_yesno(corpus_dir, output_dir=None)
    manifests, _ = finish_preparation(CORPUS, dict(raw), output_dir)
    return manifests
