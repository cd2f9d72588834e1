"""What every real-corpus recipe does after lhotse's own ``prepare_X``: our text, lexicon and files.

Flow of :func:`finish_preparation`, given lhotse's manifests per split:

1. normalize every transcript (:func:`asr_kd.data.text.normalize_text`); drop the utterances left
   without words (WARNING naming each);
2. build one lexicon over the words of all splits (dictionaries first, espeak-ng G2P for the rest;
   OOV list in ``<corpus>_oov.txt``);
3. drop the utterances with a word that got no pronunciation (WARNING naming utterance and word);
   the lexicon keeps the words of the remaining utterances only;
4. validate and write ``<corpus>_recordings_<split>.jsonl.gz``, ``<corpus>_supervisions_<split>.jsonl.gz``
   (each atomically, utterances sorted by id) and, last, ``<corpus>_lexicon.txt``.

A preparation is finished when all those files exist; :func:`load_finished` then reads them back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

from lhotse import RecordingSet, SupervisionSet, load_manifest, validate_recordings_and_supervisions

from asr_kd.data.g2p import build_lexicon
from asr_kd.data.lexicon import Lexicon, write_lexicon
from asr_kd.data.text import normalize_text
from asr_kd.utils import atomic_output

if TYPE_CHECKING:
    from asr_kd.tts.espeak import EspeakNG

logger = logging.getLogger(__name__)

#: ``{split: {"recordings": RecordingSet, "supervisions": SupervisionSet}}``
Manifests = dict[str, dict[str, Union[RecordingSet, SupervisionSet]]]


class CorpusError(ValueError):
    """A corpus directory that does not look like what the recipe expects."""


@dataclass
class PrepReport:
    """Counts of what :func:`finish_preparation` kept and dropped."""

    kept: dict[str, int] = field(default_factory=dict)  # split -> utterances written
    empty: list[str] = field(default_factory=list)  # utterance ids with no words after normalization
    unpronounceable: list[str] = field(default_factory=list)  # ids with a word lacking a pronunciation
    oov_words: list[str] = field(default_factory=list)
    failed_words: list[str] = field(default_factory=list)


def manifest_paths(corpus: str, split: str, output_dir: Path) -> dict[str, Path]:
    """``{"recordings": .../<corpus>_recordings_<split>.jsonl.gz, "supervisions": ...}``."""
    return {
        kind: Path(output_dir) / f"{corpus}_{kind}_{split}.jsonl.gz"
        for kind in ("recordings", "supervisions")
    }


def lexicon_path(corpus: str, output_dir: Path) -> Path:
    """``<output_dir>/<corpus>_lexicon.txt``."""
    return Path(output_dir) / f"{corpus}_lexicon.txt"


def oov_path(corpus: str, output_dir: Path) -> Path:
    """``<output_dir>/<corpus>_oov.txt``: words pronounced by G2P (``WORD PHONES``) or not at all."""
    return Path(output_dir) / f"{corpus}_oov.txt"


def load_finished(corpus: str, splits: Sequence[str], output_dir: Path) -> Manifests | None:
    """The manifests of a finished preparation of ``splits``, or ``None`` if any output is missing."""
    paths = {split: manifest_paths(corpus, split, output_dir) for split in splits}
    wanted = [p for split_paths in paths.values() for p in split_paths.values()]
    if not lexicon_path(corpus, output_dir).is_file() or not all(p.is_file() for p in wanted):
        return None
    logger.info("%s: manifests and lexicon already in %s, skipping preparation", corpus, output_dir)
    return {
        split: {kind: load_manifest(path) for kind, path in split_paths.items()}
        for split, split_paths in paths.items()
    }


def _normalized(supervisions: SupervisionSet, report: PrepReport) -> list:
    """Supervisions with normalized text; those left without words are dropped and reported."""
    kept = []
    for sup in supervisions:
        text = normalize_text(sup.text or "")
        if not text:
            logger.warning("Dropping utterance %s: empty transcript %r", sup.id, sup.text)
            report.empty.append(sup.id)
            continue
        kept.append(sup.transform_text(lambda _, text=text: text))
    return sorted(kept, key=lambda sup: sup.id)


def _pronounceable(segments: list, lexicon: Lexicon, report: PrepReport) -> list:
    """The segments whose every word has a pronunciation; the others are dropped and reported."""
    kept = []
    for sup in segments:
        missing = [w for w in sup.text.split() if w not in lexicon]
        if missing:
            logger.warning(
                "Dropping utterance %s: no pronunciation for %s", sup.id, " ".join(missing)
            )
            report.unpronounceable.append(sup.id)
            continue
        kept.append(sup)
    return kept


def finish_preparation(
    corpus: str,
    raw: Manifests,
    output_dir: Path | str,
    dictionaries: Sequence[Lexicon] | None = None,
    espeak: "EspeakNG | None" = None,
) -> tuple[Manifests, PrepReport]:
    """Normalize, build the lexicon, filter, validate and write (see the module docstring).

    Args:
        corpus: file name prefix, e.g. ``"librispeech"``.
        raw: lhotse's manifests per split.
        output_dir: where the files go.
        dictionaries: pronunciation dictionaries in priority order (default CMUdict), see
            :func:`asr_kd.data.g2p.build_lexicon`.
        espeak: an espeak-ng instance to reuse for the G2P fallback.

    Raises:
        CorpusError: when a split has no usable utterance left.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = PrepReport()
    splits = sorted(raw)
    normalized = {split: _normalized(raw[split]["supervisions"], report) for split in splits}
    words = [w for split in splits for sup in normalized[split] for w in sup.text.split()]
    lexicon, stats = build_lexicon(
        words, dictionaries, oov_file=oov_path(corpus, output_dir), espeak=espeak
    )
    report.oov_words, report.failed_words = stats.oov_words, stats.failed_words

    manifests: Manifests = {}
    for split in splits:
        supervisions = SupervisionSet.from_segments(
            _pronounceable(normalized[split], lexicon, report)
        )
        if len(supervisions) == 0:
            raise CorpusError(f"{corpus} split {split!r}: no usable utterance left")
        recording_ids = {sup.recording_id for sup in supervisions}
        recordings = RecordingSet.from_recordings(
            sorted((r for r in raw[split]["recordings"] if r.id in recording_ids), key=lambda r: r.id)
        )
        validate_recordings_and_supervisions(recordings, supervisions)
        for kind, path in manifest_paths(corpus, split, output_dir).items():
            with atomic_output(path) as tmp:
                (recordings if kind == "recordings" else supervisions).to_file(tmp)
        manifests[split] = {"recordings": recordings, "supervisions": supervisions}
        report.kept[split] = len(supervisions)
    # only the words of the utterances kept (not those of dropped ones)
    vocabulary = {w for m in manifests.values() for sup in m["supervisions"] for w in sup.text.split()}
    lexicon = {word: prons for word, prons in lexicon.items() if word in vocabulary}
    write_lexicon(lexicon_path(corpus, output_dir), lexicon)
    logger.info(
        "%s: wrote %s to %s; dropped %d empty and %d unpronounceable utterances; "
        "%d lexicon words (%d by G2P, %d without pronunciation)",
        corpus,
        ", ".join(f"{split}={n}" for split, n in report.kept.items()),
        output_dir,
        len(report.empty),
        len(report.unpronounceable),
        len(lexicon),
        stats.num_oov - stats.num_failed,
        stats.num_failed,
    )
    return manifests, report
