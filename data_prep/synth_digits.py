"""synth_digits: an offline connected-digits corpus spoken by espeak-ng, with exact phone alignments.

Connected digit strings of 1-7 words ("zero", "oh", "one" ... "nine"), TIDIGITS-like, synthesized
in-process by libespeak-ng (:mod:`asr_kd.tts.espeak`) with many voices and variants, random rate, pitch,
pitch range and inter-word gaps, then mixed with white, pink or babble noise at random SNRs. Train,
dev and test use disjoint voice variants, so the test speakers are unseen.

Ground truth: espeak-ng's phoneme events give the sample at which each phone starts; they are stored as
lhotse alignment tiers ``"phone"`` (covering the whole utterance, pauses as ``SIL``) and ``"word"`` on
each supervision, and the pronunciations actually spoken become ``synth_digits_lexicon.txt``.

The synthesis machinery (voices, delivery, noise, tiers, parallel workers, determinism) is
:mod:`data_prep.espeak_corpus`, shared with ``synth_rm``; the corpus depends on ``seed`` only, not on
``num_jobs``.

Usage::

    asr-kd prepare synth_digits --output-dir data/manifests --hours 1.0 --seed 42 --nj 2
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from asr_kd.data.lexicon import lexicon_from_counts, write_lexicon
from asr_kd.guard import locked_stage
from asr_kd.utils import write_json
from data_prep.espeak_corpus import (
    ACCENTS,
    SAMPLE_RATE,
    DeliverySampler,
    UtteranceSpec,
    check_config,
    partition_voices,
    pronunciation_counts,
    split_statistics,
    synthesize_split,
    write_manifests,
)

logger = logging.getLogger(__name__)

__all__ = ["ACCENTS", "DIGIT_WORDS", "SynthDigitsConfig", "UtteranceSpec", "plan_split", "prepare_synth_digits",
           "pronunciation_counts", "split_statistics", "split_voice_variants"]  # fmt: skip

CORPUS = "synth_digits"
SPLITS = ("train", "dev", "test")
DIGIT_WORDS = ("ZERO", "OH", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")


@dataclass
class SynthDigitsConfig:
    """Everything that determines the corpus (saved as ``synth_digits_prepare_config.json``)."""

    hours: float = 1.0  # total hours over all splits (approximate: planned from estimated durations)
    seed: int = 42
    split_shares: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, dev, test share of hours
    voice_shares: tuple[float, float, float] = (0.7, 0.15, 0.15)  # share of voice variants per split
    min_words: int = 1
    max_words: int = 7
    rate: tuple[int, int] = (120, 240)  # words per minute
    pitch: tuple[int, int] = (20, 80)  # 0-100
    pitch_range: tuple[int, int] = (10, 90)  # 0-100
    word_gap: tuple[int, int] = (0, 12)  # extra pause between words, units of 10 ms
    snr_db: tuple[float, float] = (0.0, 30.0)
    noise_types: dict[str, float] = field(
        default_factory=lambda: {"clean": 0.1, "white": 0.3, "pink": 0.3, "babble": 0.3}
    )
    babble_talkers: tuple[int, int] = (3, 7)
    peak_level: tuple[float, float] = (0.25, 0.95)  # peak amplitude after mixing
    sample_rate: int = SAMPLE_RATE


def split_voice_variants(variants: list[str], cfg: SynthDigitsConfig) -> dict[str, list[str]]:
    """Partition espeak-ng voice variants into disjoint train/dev/test sets (seeded)."""
    return partition_voices(
        variants, cfg.seed, [("test", cfg.voice_shares[2]), ("dev", cfg.voice_shares[1])], rest="train"
    )


def _estimated_seconds(num_words: int, rate: int, word_gap: int) -> float:
    # least-squares fit of espeak-ng's durations over 557 utterances (mean abs. error 0.15 s)
    return num_words * (0.55 * 175.0 / rate + 0.0113 * word_gap - 0.265) + 0.36


def plan_split(
    split: str, variants: list[str], seconds: float, cfg: SynthDigitsConfig
) -> list[UtteranceSpec]:
    """Draw utterance specs for ``split`` until their estimated duration reaches ``seconds``."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    delivery = DeliverySampler(cfg, variants)
    specs: list[UtteranceSpec] = []
    total = 0.0
    while total < seconds:
        n = int(rng.integers(cfg.min_words, cfg.max_words + 1))
        words = tuple(DIGIT_WORDS[i] for i in rng.integers(0, len(DIGIT_WORDS), n))
        spec = delivery.draw(rng, f"{CORPUS}-{split}-{len(specs):07d}", words)
        specs.append(spec)
        total += _estimated_seconds(n, spec.rate, spec.word_gap)
    return specs


@locked_stage("prepare")  # <output_dir>/.lock-prepare: one writer; a killed run's .tmp.* removed
def prepare_synth_digits(
    output_dir: Path | str,
    hours: float = 1.0,
    seed: int = 42,
    num_jobs: int = 1,
    **overrides,
) -> dict[str, dict]:
    """Synthesize the corpus and write lhotse manifests, the lexicon, statistics and the config.

    Writes into ``output_dir``: ``synth_digits_{recordings,supervisions}_{train,dev,test}.jsonl.gz``,
    ``synth_digits_lexicon.txt``, ``synth_digits_stats.json``, ``synth_digits_prepare_config.json`` and
    the audio under ``output_dir/wav/<split>/``. Splits whose manifests exist are not redone.

    Args:
        hours: total corpus size in hours over all splits (default: a CPU-sized corpus).
        seed: the corpus is a function of the seed (and the config) only.
        num_jobs: worker processes for synthesis.
        overrides: any other :class:`SynthDigitsConfig` field.

    Returns:
        ``{split: {"recordings": RecordingSet, "supervisions": SupervisionSet}}``
    """
    from lhotse import RecordingSet, SupervisionSet

    if hours <= 0:
        raise ValueError(f"hours must be > 0, got {hours}")
    if num_jobs < 1:
        raise ValueError(f"num_jobs must be >= 1, got {num_jobs}")
    cfg = SynthDigitsConfig(hours=hours, seed=seed, **overrides)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / f"{CORPUS}_prepare_config.json"
    check_config(config_path, cfg)

    from asr_kd.tts.espeak import list_voice_variants

    voices = split_voice_variants(list_voice_variants(), cfg)
    manifests: dict[str, dict] = {}
    stats: dict[str, dict] = {}
    for split, share in zip(SPLITS, cfg.split_shares):
        rec_path = output_dir / f"{CORPUS}_recordings_{split}.jsonl.gz"
        sup_path = output_dir / f"{CORPUS}_supervisions_{split}.jsonl.gz"
        if rec_path.is_file() and sup_path.is_file():
            logger.info(f"{CORPUS} {split}: manifests exist, skipping synthesis ({rec_path})")
            recordings = RecordingSet.from_file(rec_path)
            supervisions = SupervisionSet.from_file(sup_path)
        else:
            specs = plan_split(split, voices[split], share * cfg.hours * 3600.0, cfg)
            recordings, supervisions, _, seconds_taken = synthesize_split(
                CORPUS, split, SPLITS.index(split), specs, output_dir / "wav" / split, cfg, num_jobs
            )
            write_manifests(recordings, supervisions, rec_path, sup_path)
            audio_s = sum(r.duration for r in recordings)
            logger.info(
                f"{CORPUS} {split}: {len(recordings)} utterances, {audio_s / 3600:.3f} h in "
                f"{seconds_taken:.1f} s ({audio_s / max(seconds_taken, 1e-9):.0f}x real time, "
                f"{num_jobs} jobs)"
            )
        manifests[split] = {"recordings": recordings, "supervisions": supervisions}
        stats[split] = split_statistics(supervisions)

    counts = pronunciation_counts(s for m in manifests.values() for s in m["supervisions"])
    write_lexicon(output_dir / f"{CORPUS}_lexicon.txt", lexicon_from_counts(counts))
    write_json(output_dir / f"{CORPUS}_stats.json", stats)
    write_json(config_path, {"config": asdict(cfg), "voice_variants": voices})
    return manifests
