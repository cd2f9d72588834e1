"""synth_digits: an offline connected-digits corpus spoken by espeak-ng, with exact phone alignments.

Connected digit strings of 1-7 words ("zero", "oh", "one" ... "nine"), TIDIGITS-like, synthesized
in-process by libespeak-ng (:mod:`asr_kd.tts.espeak`) with many voices and variants, random rate, pitch,
pitch range and inter-word gaps, then mixed with white, pink or babble noise at random SNRs. Train,
dev and test use disjoint voice variants, so the test speakers are unseen.

Ground truth: espeak-ng's phoneme events give the sample at which each phone starts; they are stored as
lhotse alignment tiers ``"phone"`` (covering the whole utterance, pauses as ``SIL``) and ``"word"`` on
each supervision, and the pronunciations actually spoken become ``synth_digits_lexicon.txt``.

Determinism: libespeak-ng keeps state between utterances (its voicing generator drifts), so every chunk
of utterances is synthesized in a fresh worker process; a fresh process replaying the same calls
produces identical samples. The corpus therefore depends on ``seed`` only, not on ``num_jobs``.

Usage::

    asr-kd prepare synth_digits --output-dir data/manifests --hours 1.0 --seed 42 --nj 2
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr_kd.data.lexicon import lexicon_from_counts, write_lexicon
from asr_kd.tts.tiers import SIL
from asr_kd.utils import atomic_output, write_json

CORPUS = "synth_digits"
SPLITS = ("train", "dev", "test")
DIGIT_WORDS = ("ZERO", "OH", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
#: English accents of espeak-ng 1.52 (each combined with a voice variant: "en-us+f3").
ACCENTS = (
    "en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-us",
    "en-us-nyc",
)  # fmt: skip
SAMPLE_RATE = 16000
CHUNK_SIZE = 64  # utterances per worker task; fixed so that output does not depend on num_jobs


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


@dataclass(frozen=True)
class UtteranceSpec:
    """One planned utterance: what to say, how, and what noise to add."""

    id: str
    words: tuple[str, ...]
    accent: str
    variant: str
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int
    noise: str
    snr_db: float
    peak: float

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"


def split_voice_variants(variants: list[str], cfg: SynthDigitsConfig) -> dict[str, list[str]]:
    """Partition espeak-ng voice variants into disjoint train/dev/test sets (seeded)."""
    rng = np.random.default_rng([cfg.seed, 7919])
    order = [variants[i] for i in rng.permutation(len(variants))]
    n_dev = max(1, round(cfg.voice_shares[1] * len(order)))
    n_test = max(1, round(cfg.voice_shares[2] * len(order)))
    return {
        "test": sorted(order[:n_test]),
        "dev": sorted(order[n_test : n_test + n_dev]),
        "train": sorted(order[n_test + n_dev :]),
    }


def _estimated_seconds(num_words: int, rate: int, word_gap: int) -> float:
    # least-squares fit of espeak-ng's durations over 557 utterances (mean abs. error 0.15 s)
    return num_words * (0.55 * 175.0 / rate + 0.0113 * word_gap - 0.265) + 0.36


def plan_split(split: str, variants: list[str], seconds: float, cfg: SynthDigitsConfig) -> list[UtteranceSpec]:
    """Draw utterance specs for ``split`` until their estimated duration reaches ``seconds``."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    noise_names = list(cfg.noise_types)
    noise_p = np.array([cfg.noise_types[n] for n in noise_names], dtype=float)
    noise_p /= noise_p.sum()
    specs: list[UtteranceSpec] = []
    total = 0.0
    while total < seconds:
        n = int(rng.integers(cfg.min_words, cfg.max_words + 1))
        spec = UtteranceSpec(
            id=f"{CORPUS}-{split}-{len(specs):07d}",
            words=tuple(DIGIT_WORDS[i] for i in rng.integers(0, len(DIGIT_WORDS), n)),
            accent=ACCENTS[int(rng.integers(len(ACCENTS)))],
            variant=variants[int(rng.integers(len(variants)))],
            rate=int(rng.integers(cfg.rate[0], cfg.rate[1] + 1)),
            pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
            pitch_range=int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1)),
            word_gap=int(rng.integers(cfg.word_gap[0], cfg.word_gap[1] + 1)),
            noise=noise_names[int(rng.choice(len(noise_names), p=noise_p))],
            snr_db=round(float(rng.uniform(*cfg.snr_db)), 2),
            peak=round(float(rng.uniform(*cfg.peak_level)), 3),
        )
        specs.append(spec)
        total += _estimated_seconds(n, spec.rate, spec.word_gap)
    return specs


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
    _check_config(config_path, cfg)

    from asr_kd.tts.espeak import list_voice_variants

    voices = split_voice_variants(list_voice_variants(), cfg)
    manifests: dict[str, dict] = {}
    stats: dict[str, dict] = {}
    for split, share in zip(SPLITS, cfg.split_shares):
        rec_path = output_dir / f"{CORPUS}_recordings_{split}.jsonl.gz"
        sup_path = output_dir / f"{CORPUS}_supervisions_{split}.jsonl.gz"
        if rec_path.is_file() and sup_path.is_file():
            logging.info(f"{CORPUS} {split}: manifests exist, skipping synthesis ({rec_path})")
            recordings = RecordingSet.from_file(rec_path)
            supervisions = SupervisionSet.from_file(sup_path)
        else:
            specs = plan_split(split, voices[split], share * cfg.hours * 3600.0, cfg)
            recordings, supervisions, seconds_taken = _synthesize_split(
                split, specs, output_dir / "wav" / split, cfg, num_jobs
            )
            _write_manifests(recordings, supervisions, rec_path, sup_path)
            audio_s = sum(r.duration for r in recordings)
            logging.info(
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


def _check_config(config_path: Path, cfg: SynthDigitsConfig) -> None:
    """Refuse to mix splits made with another config into the same output directory."""
    import json

    if not config_path.is_file():
        return
    old = json.loads(config_path.read_text())["config"]
    new = json.loads(json.dumps(asdict(cfg)))
    if old != new:
        diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
        raise ValueError(
            f"{config_path} was written with another configuration (field: (old, new) = {diff}); "
            f"use another --output-dir or delete the old manifests"
        )


def _synthesize_split(split, specs, wav_dir, cfg, num_jobs):
    chunks = [specs[i : i + CHUNK_SIZE] for i in range(0, len(specs), CHUNK_SIZE)]
    tasks = [
        (chunk, str(wav_dir / f"{k:05d}"), asdict(cfg), [cfg.seed, SPLITS.index(split), k])
        for k, chunk in enumerate(chunks)
    ]
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torchaudio", "soundfile", "lhotse", "data_prep.synth_digits"])
    results: list = [None] * len(tasks)
    start = time.perf_counter()
    # max_tasks_per_child=1: each chunk gets a fresh libespeak-ng (see the module docstring)
    with ProcessPoolExecutor(num_jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(synthesize_chunk, *task): k for k, task in enumerate(tasks)}
        from concurrent.futures import as_completed

        with tqdm(total=len(specs), desc=f"synthesize {split}", unit="utt") as bar:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(len(tasks[futures[future]][0]))
    seconds_taken = time.perf_counter() - start
    recordings, supervisions, failures = [], [], Counter()
    for chunk_recordings, chunk_supervisions, chunk_failures in results:
        recordings.extend(chunk_recordings)
        supervisions.extend(chunk_supervisions)
        failures.update(chunk_failures)
    if failures:
        logging.warning(f"{CORPUS} {split}: skipped {sum(failures.values())} utterances: {dict(failures)}")
    from lhotse import RecordingSet, SupervisionSet

    return RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions), seconds_taken


def _write_manifests(recordings, supervisions, rec_path: Path, sup_path: Path) -> None:
    from lhotse.qa import validate_recordings_and_supervisions

    validate_recordings_and_supervisions(recordings, supervisions)
    # supervisions last: a split counts as done only when both files exist
    for manifest, path in ((recordings, rec_path), (supervisions, sup_path)):
        with atomic_output(path) as tmp:
            manifest.to_file(tmp)


def pronunciation_counts(supervisions) -> dict[str, Counter]:
    """Word -> Counter of phone tuples, read from the supervisions' "word" and "phone" tiers."""
    counts: dict[str, Counter] = {}
    for sup in supervisions:
        phones = sup.alignment["phone"]
        for word in sup.alignment["word"]:
            end = word.start + word.duration
            pron = tuple(
                p.symbol for p in phones if word.start - 1e-6 <= p.start < end - 1e-6 and p.symbol != SIL
            )
            counts.setdefault(word.symbol, Counter())[pron] += 1
    return counts


def split_statistics(supervisions) -> dict:
    """:func:`~asr_kd.data.stats.supervision_statistics` plus voice variants and noise conditions."""
    from asr_kd.data.stats import supervision_statistics

    sups = list(supervisions)
    snrs = [s.custom["snr_db"] for s in sups if s.custom["snr_db"] is not None]
    return {
        **supervision_statistics(sups),
        "voice_variants": sorted({s.custom["variant"] for s in sups}),
        "noise": dict(sorted(Counter(s.custom["noise"] for s in sups).items())),
        "mean_snr_db": round(float(np.mean(snrs)), 2) if snrs else None,
    }


# ---------------------------------------------------------------------------------------------------
# Worker side: runs in a fresh process per chunk.


def synthesize_chunk(specs: list[UtteranceSpec], wav_dir: str, cfg_dict: dict, seed: list[int]):
    """Synthesize, align, mix and write one chunk of utterances.

    Returns ``(recordings, supervisions, failures)`` where ``failures`` counts skipped utterances by
    reason; a failing utterance never aborts the chunk.
    """
    import soundfile as sf
    import torch
    import torchaudio
    from lhotse import Recording, SupervisionSegment
    from lhotse.audio import AudioSource

    from asr_kd.data.noise import babble_noise, mix_at_snr, pink_noise, white_noise
    from asr_kd.tts.espeak import EspeakError, get_espeak
    from asr_kd.tts.tiers import alignment_tiers, speech_mask

    torch.set_num_threads(1)
    cfg = SynthDigitsConfig(**cfg_dict)
    rng = np.random.default_rng(seed)
    tts = get_espeak()
    resample = torchaudio.transforms.Resample(tts.sample_rate, cfg.sample_rate)
    sr = cfg.sample_rate

    clean, failures = [], Counter()
    for spec in specs:
        try:
            syn = tts.synthesize(
                " ".join(spec.words).lower(), voice=spec.voice, rate=spec.rate, pitch=spec.pitch,
                pitch_range=spec.pitch_range, word_gap=spec.word_gap,
                seed=int(rng.integers(2**31)),
            )  # fmt: skip
        except EspeakError as e:
            logging.warning(f"{spec.id}: espeak-ng failed ({e}); skipped")
            failures["synthesis_error"] += 1
            continue
        with torch.no_grad():
            audio = resample(torch.from_numpy(syn.audio)).numpy()
        tiers = alignment_tiers(syn, audio.shape[0], sr)
        if isinstance(tiers, str):
            logging.warning(f"{spec.id} ({spec.voice}, {' '.join(spec.words)!r}): {tiers}; skipped")
            failures[tiers.split(":")[0]] += 1
            continue
        clean.append((spec, audio, *tiers))

    out_dir = Path(wav_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recordings, supervisions = [], []
    for i, (spec, audio, phones, words) in enumerate(clean):
        n = audio.shape[0]
        mask = speech_mask(phones, n, sr)
        noise_type = spec.noise
        if noise_type == "babble" and len(clean) < 2:
            noise_type = "pink"  # a chunk of one utterance has nobody to babble
        if noise_type == "clean":
            noisy = audio
        else:
            if noise_type == "white":
                noise = white_noise(n, rng)
            elif noise_type == "pink":
                noise = pink_noise(n, rng)
            else:
                others = [j for j in range(len(clean)) if j != i]
                k = min(len(others), int(rng.integers(cfg.babble_talkers[0], cfg.babble_talkers[1] + 1)))
                talkers = rng.choice(others, size=k, replace=False)
                noise = babble_noise(n, [clean[j][1] for j in talkers], rng)
            noisy = mix_at_snr(audio, noise, spec.snr_db, mask)
        noisy = noisy * (spec.peak / max(float(np.abs(noisy).max()), 1e-9))
        path = out_dir / f"{spec.id}.wav"
        sf.write(path, noisy, sr, subtype="PCM_16")
        duration = n / sr
        recordings.append(
            Recording(
                id=spec.id,
                sources=[AudioSource(type="file", channels=[0], source=str(path))],
                sampling_rate=sr,
                num_samples=n,
                duration=duration,
            )
        )
        supervisions.append(
            SupervisionSegment(
                id=spec.id,
                recording_id=spec.id,
                start=0.0,
                duration=duration,
                channel=0,
                text=" ".join(spec.words),
                language="English",
                speaker=spec.voice,
                custom={
                    "accent": spec.accent,
                    "variant": spec.variant,
                    "rate": spec.rate,
                    "pitch": spec.pitch,
                    "pitch_range": spec.pitch_range,
                    "word_gap": spec.word_gap,
                    "noise": noise_type,
                    "snr_db": None if noise_type == "clean" else spec.snr_db,
                },
                alignment={"phone": phones, "word": words},
            )
        )
    return recordings, supervisions, dict(failures)
