"""LibriSpeech and mini LibriSpeech through lhotse's recipe, in our manifest shape.

Usage:
    from data_prep.librispeech import download_librispeech, prepare_librispeech
    corpus_dir = download_librispeech("download", dataset_parts="mini_librispeech")
    prepare_librispeech(corpus_dir, "data/manifests", dataset_parts="mini_librispeech")

Expected input (lhotse's layout)::

    LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   # "<utt-id> WORDS ..."

Outputs in ``output_dir``: ``librispeech_{recordings,supervisions}_<part>.jsonl.gz`` per part (split
names are lhotse's part names: ``dev-clean-2``, ``train-clean-5``, ``test-clean``, ...),
``librispeech_lexicon.txt`` (CMUdict + espeak-ng G2P), ``librispeech_oov.txt``; lhotse's raw manifests
are kept in ``output_dir/.lhotse/`` so that a re-run after adding parts does not re-read audio.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence
from unittest import mock

import lhotse.recipes.librispeech as lhotse_librispeech
from lhotse.recipes import download_librispeech as lhotse_download_librispeech
from lhotse.recipes import prepare_librispeech as lhotse_prepare_librispeech
from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH

from asr_kd.guard import locked_stage
from data_prep.common import CorpusError, Manifests, finish_preparation, load_finished

logger = logging.getLogger(__name__)

CORPUS = "librispeech"
DEFAULT_BASE_URL = "http://www.openslr.org/resources"


def _named_parts(dataset_parts: str | Sequence[str]) -> list[str]:
    if dataset_parts == "mini_librispeech":
        return list(MINI_LIBRISPEECH)
    if dataset_parts in ("librispeech", "all"):
        return list(LIBRISPEECH)
    if isinstance(dataset_parts, str):
        return [dataset_parts]
    return list(dataset_parts)


def download_librispeech(
    target_dir: Path | str = ".",
    dataset_parts: str | Sequence[str] = "mini_librispeech",
    force_download: bool = False,
    base_url: str = DEFAULT_BASE_URL,
) -> Path:
    """Download and unpack LibriSpeech parts with lhotse; return ``target_dir/LibriSpeech``.

    Archives come from ``{base_url}/12/<part>.tar.gz`` (LibriSpeech) or ``{base_url}/31/<part>.tar.gz``
    (mini LibriSpeech); any URL scheme urllib opens works, ``file://`` included. A part already
    unpacked (``<part>/.completed``) is skipped. ``force_download`` removes the archive and that marker
    first (lhotse's own flag neither re-unpacks a completed part nor survives an existing archive).

    Args:
        dataset_parts: ``"mini_librispeech"``, ``"librispeech"`` (alias ``"all"``: the 960 h and
            the dev/test parts), one part name or a list of them.
    """
    target_dir = Path(target_dir)
    parts = _named_parts(dataset_parts)
    unknown = [p for p in parts if p not in LIBRISPEECH and p not in MINI_LIBRISPEECH]
    if unknown:
        raise ValueError(
            f"dataset_parts: unknown LibriSpeech part(s) {unknown}; "
            f"expected some of {LIBRISPEECH + MINI_LIBRISPEECH}"
        )
    if force_download:
        for part in parts:
            (target_dir / "LibriSpeech" / part / ".completed").unlink(missing_ok=True)
            (target_dir / f"{part}.tar.gz").unlink(missing_ok=True)
    return lhotse_download_librispeech(
        target_dir, dataset_parts=parts, force_download=False, base_url=base_url.rstrip("/")
    )


def _resolve_corpus_dir(corpus_dir: Path) -> Path:
    """Accept ``LibriSpeech/`` itself or the directory that holds it."""
    if not corpus_dir.is_dir():
        raise CorpusError(f"LibriSpeech corpus directory {corpus_dir} does not exist")
    known = set(LIBRISPEECH) | set(MINI_LIBRISPEECH)
    if not any((corpus_dir / p).is_dir() for p in known) and (corpus_dir / "LibriSpeech").is_dir():
        return corpus_dir / "LibriSpeech"
    return corpus_dir


def resolve_parts(corpus_dir: Path, dataset_parts: str | Sequence[str]) -> list[str]:
    """Part names to prepare: ``"auto"`` = every known part on disk, ``"mini_librispeech"`` /
    ``"librispeech"`` (``"all"``) = those of the set that are on disk; explicit names must all be
    on disk."""
    if dataset_parts in ("auto", "mini_librispeech", "librispeech", "all"):
        candidates = {
            "auto": LIBRISPEECH + MINI_LIBRISPEECH,
            "mini_librispeech": MINI_LIBRISPEECH,
            "librispeech": LIBRISPEECH,
            "all": LIBRISPEECH,
        }[dataset_parts]
        parts = [p for p in candidates if (corpus_dir / p).is_dir()]
        if not parts:
            raise CorpusError(
                f"dataset_parts={dataset_parts!r}: none of {list(candidates)} is a directory "
                f"in {corpus_dir}"
            )
        return parts
    parts = _named_parts(dataset_parts)
    missing = [p for p in parts if not (corpus_dir / p).is_dir()]
    if missing:
        raise CorpusError(f"dataset_parts: {missing} not found in {corpus_dir}")
    return parts


def _tolerant_parse_utterance(dropped: list[str]):
    """lhotse's ``parse_utterance`` that skips ``*.trans.txt`` lines with an id and no words
    (lhotse itself raises an unpacking ValueError on them)."""
    original = lhotse_librispeech.parse_utterance

    def parse_utterance(part_path, line, alignments):
        fields = line.split(maxsplit=1)
        if len(fields) < 2:
            if fields:
                logger.warning(
                    "Dropping utterance %s in %s: empty transcript", fields[0], part_path
                )
                dropped.append(fields[0])
            return None
        return original(part_path, line, alignments)

    return parse_utterance


@locked_stage("prepare")  # <output_dir>/.lock-prepare: one writer; a killed run's .tmp.* removed
def prepare_librispeech(
    corpus_dir: Path | str,
    output_dir: Path | str,
    dataset_parts: str | Sequence[str] = "mini_librispeech",
    num_jobs: int = 1,
) -> Manifests:
    """Prepare LibriSpeech parts: lhotse's recipe, then our text normalization, lexicon and filtering.

    Args:
        corpus_dir: the ``LibriSpeech`` directory (or its parent).
        output_dir: where the manifests and the lexicon go (see the module docstring).
        dataset_parts: ``"mini_librispeech"`` (default), ``"librispeech"``, ``"auto"`` or part names.
        num_jobs: threads for lhotse's audio header reading.

    Returns:
        ``{part: {"recordings": RecordingSet, "supervisions": SupervisionSet}}``; re-running with the
        outputs present just loads them.
    """
    corpus_dir = _resolve_corpus_dir(Path(corpus_dir).absolute())
    output_dir = Path(output_dir)
    parts = resolve_parts(corpus_dir, dataset_parts)
    finished = load_finished(CORPUS, parts, output_dir)
    if finished is not None:
        return finished
    logger.info("Preparing LibriSpeech parts %s from %s", parts, corpus_dir)
    dropped: list[str] = []
    with mock.patch.object(
        lhotse_librispeech, "parse_utterance", _tolerant_parse_utterance(dropped)
    ):
        raw = lhotse_prepare_librispeech(
            corpus_dir, dataset_parts=parts, output_dir=output_dir / ".lhotse", num_jobs=num_jobs
        )
    missing = [p for p in parts if p not in raw or len(raw[p].get("supervisions", [])) == 0]
    if missing:
        raise CorpusError(f"LibriSpeech parts {missing} in {corpus_dir}: no utterances found")
    manifests, report = finish_preparation(CORPUS, {p: raw[p] for p in parts}, output_dir)
    if dropped:
        logger.info("LibriSpeech: %d utterances had an empty transcript line", len(dropped))
    return manifests
