"""The machinery shared by the espeak-ng corpora (``synth_digits``, ``synth_rm``): voices, delivery, noise,
exact tiers, parallel synthesis and the manifests.

A corpus plans its utterances as :class:`UtteranceSpec` (what to say, with which voice, rate, pitch,
pitch range and inter-word gaps, which noise at which SNR, which peak level; drawn by
:class:`DeliverySampler`), then :func:`synthesize_split` speaks them with libespeak-ng
(:mod:`asr_kd.tts.espeak`) in worker processes, turns espeak-ng's phoneme events into lhotse alignment
tiers ``"phone"`` (whole utterance, pauses as ``SIL``) and ``"word"`` (:mod:`asr_kd.tts.tiers`), mixes
white, pink or babble noise (:mod:`asr_kd.data.noise`) and writes 16-bit wavs plus lhotse recordings and
supervisions.

Determinism: libespeak-ng keeps state between utterances (its voicing generator drifts), so every chunk
of ``CHUNK_SIZE`` utterances is synthesized in a fresh worker process, seeded by ``(seed, split index,
chunk index)``; a fresh process replaying the same calls produces identical samples. A corpus is
therefore a function of its config only, not of the number of jobs.

Options a corpus may turn on per chunk (:class:`ChunkOptions`; all off gives ``synth_digits``' output
byte for byte):

- ``phone_map``: espeak-ng phoneme -> inventory phone, applied to the phone tier (an utterance with an
  unmapped phoneme is skipped and counted as ``unmapped_phone``);
- ``noise_floor_db``: white noise this many dB below the clean utterance's peak is added to the speech
  before any mixing, so that no recording holds digital silence (whose log-mel energies sit on the
  fbank floor, where a GMM's variances collapse);
- ``clean_dir``: also write the noise-free parallel copy of every recording there (same id, same
  length, same gain: ``noisy = clean + gain * noise`` up to 16-bit rounding);
- ``split_merged_words``: words that espeak-ng merged into the previous word ("of the") get their
  phones back (:func:`asr_kd.tts.tiers.split_merged_words`, checked against espeak-ng's own
  phonemization of the word in the same voice, compared after the phone map);
- ``unlabeled``: the supervision gets ``text=None``; the transcript is kept only as ground truth in
  ``custom["transcript"]`` (with ``custom["unlabeled"] = True``) and in the tiers.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from asr_kd.tts.tiers import SIL
from asr_kd.utils import atomic_output, write_json

logger = logging.getLogger(__name__)

#: English accents of espeak-ng 1.52 (each combined with a voice variant: "en-us+f3").
ACCENTS = (
    "en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-us",
    "en-us-nyc",
)  # fmt: skip

SAMPLE_RATE = 16000
CHUNK_SIZE = 64  # utterances per worker task; fixed so that output does not depend on num_jobs


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


@dataclass(frozen=True)
class ChunkOptions:
    """Per-split synthesis options (see the module docstring); the defaults change nothing."""

    phone_map: dict[str, str] | None = None
    noise_floor_db: float | None = None
    clean_dir: str | None = None
    unlabeled: bool = False
    split_merged_words: bool = False


class DeliverySampler:
    """Draws how an utterance is spoken: accent, voice variant, rate, pitch, gaps, noise, SNR, peak.

    ``cfg`` is any corpus config with the fields ``rate``, ``pitch``, ``pitch_range``, ``word_gap``
    (inclusive integer ranges), ``snr_db``, ``peak_level`` (float ranges) and ``noise_types``
    (name -> probability).
    """

    def __init__(self, cfg: Any, variants: Sequence[str], accents: Sequence[str] = ACCENTS) -> None:
        self.cfg, self.variants, self.accents = cfg, list(variants), list(accents)
        self.noise_names = list(cfg.noise_types)
        p = np.array([cfg.noise_types[n] for n in self.noise_names], dtype=float)
        self.noise_p = p / p.sum()

    def draw(self, rng: np.random.Generator, id: str, words: tuple[str, ...]) -> UtteranceSpec:
        cfg = self.cfg
        return UtteranceSpec(
            id=id,
            words=words,
            accent=self.accents[int(rng.integers(len(self.accents)))],
            variant=self.variants[int(rng.integers(len(self.variants)))],
            rate=int(rng.integers(cfg.rate[0], cfg.rate[1] + 1)),
            pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
            pitch_range=int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1)),
            word_gap=int(rng.integers(cfg.word_gap[0], cfg.word_gap[1] + 1)),
            noise=self.noise_names[int(rng.choice(len(self.noise_names), p=self.noise_p))],
            snr_db=round(float(rng.uniform(*cfg.snr_db)), 2),
            peak=round(float(rng.uniform(*cfg.peak_level)), 3),
        )


def partition_voices(
    variants: Sequence[str], seed: int, shares: Sequence[tuple[str, float]], rest: str
) -> dict[str, list[str]]:
    """Partition voice variants into disjoint sets (seeded): ``shares`` in order, ``rest`` the remainder.

    Each named set gets ``max(1, round(share * len(variants)))`` variants of a seeded permutation.
    """
    rng = np.random.default_rng([seed, 7919])
    order = [variants[i] for i in rng.permutation(len(variants))]
    out, pos = {}, 0
    for name, share in shares:
        n = max(1, round(share * len(order)))
        out[name] = sorted(order[pos : pos + n])
        pos += n
    out[rest] = sorted(order[pos:])
    if not out[rest]:
        raise ValueError(f"no voice variant left for {rest!r}: {len(order)} variants, shares {list(shares)}")
    return out


def check_config(config_path: Path, cfg: Any) -> None:
    """Refuse to mix splits made with another config into the same output directory.

    Without a config file yet, the config is written now, before any split is made, so that a run killed
    after one split and resumed with other settings is refused too (the finished run rewrites the file
    with everything it records).
    """
    if not config_path.is_file():
        write_json(config_path, {"config": asdict(cfg)})
        return
    old = json.loads(config_path.read_text())["config"]
    new = json.loads(json.dumps(asdict(cfg)))
    if old != new:
        diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
        raise ValueError(
            f"{config_path} was written with another configuration (field: (old, new) = {diff}); "
            f"use another --output-dir or delete the old manifests"
        )


def synthesize_split(
    corpus: str,
    split: str,
    split_index: int,
    specs: list[UtteranceSpec],
    wav_dir: Path,
    cfg: Any,
    num_jobs: int,
    options: ChunkOptions = ChunkOptions(),
):
    """Synthesize ``specs`` in fresh worker processes, chunk by chunk.

    Returns ``(recordings, supervisions, clean_recordings, seconds_taken)``; ``clean_recordings`` is
    None unless ``options.clean_dir`` is set. Skipped utterances are counted by reason in the log.
    """
    from lhotse import RecordingSet, SupervisionSet

    chunks = [specs[i : i + CHUNK_SIZE] for i in range(0, len(specs), CHUNK_SIZE)]
    tasks = []
    for k, chunk in enumerate(chunks):
        chunk_options = options
        if options.clean_dir is not None:
            chunk_options = ChunkOptions(
                **{
                    **asdict(options),
                    "clean_dir": str(Path(options.clean_dir) / f"{k:05d}"),
                }
            )
        tasks.append(
            (
                chunk,
                str(wav_dir / f"{k:05d}"),
                cfg,
                [cfg.seed, split_index, k],
                chunk_options,
            )
        )
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torchaudio", "soundfile", "lhotse", "data_prep.espeak_corpus"])
    results: list = [None] * len(tasks)
    start = time.perf_counter()
    # max_tasks_per_child=1: each chunk gets a fresh libespeak-ng (see the module docstring)
    with ProcessPoolExecutor(num_jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(synthesize_chunk, *task): k for k, task in enumerate(tasks)}
        with tqdm(total=len(specs), desc=f"synthesize {split}", unit="utt") as bar:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(len(tasks[futures[future]][0]))
    seconds_taken = time.perf_counter() - start
    recordings, supervisions, clean, failures, repaired = [], [], [], Counter(), 0
    for (
        chunk_recordings,
        chunk_supervisions,
        chunk_clean,
        chunk_failures,
        chunk_repaired,
    ) in results:
        repaired += chunk_repaired
        recordings.extend(chunk_recordings)
        supervisions.extend(chunk_supervisions)
        clean.extend(chunk_clean)
        failures.update(chunk_failures)
    if repaired:
        logger.info(f"{corpus} {split}: {repaired} utterances had words merged by espeak-ng, split back")
    if failures:
        logger.warning(f"{corpus} {split}: skipped {sum(failures.values())} utterances: {dict(failures)}")
    return (
        RecordingSet.from_recordings(recordings),
        SupervisionSet.from_segments(supervisions),
        RecordingSet.from_recordings(clean) if options.clean_dir is not None else None,
        seconds_taken,
    )


def write_manifests(recordings, supervisions, rec_path: Path, sup_path: Path) -> None:
    """Validate, then write recordings and (last: a split counts as done when both exist) supervisions."""
    from lhotse.qa import validate_recordings_and_supervisions

    validate_recordings_and_supervisions(recordings, supervisions)
    for manifest, path in ((recordings, rec_path), (supervisions, sup_path)):
        with atomic_output(path) as tmp:
            manifest.to_file(tmp)


def pronunciation_counts(supervisions: Iterable) -> dict[str, Counter]:
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


def split_statistics(supervisions: Iterable) -> dict:
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


def synthesize_chunk(
    specs: list[UtteranceSpec],
    wav_dir: str,
    cfg: Any,
    seed: list[int],
    options: ChunkOptions = ChunkOptions(),
):
    """Synthesize, align, mix and write one chunk of utterances.

    Returns ``(recordings, supervisions, clean_recordings, failures, merged_repaired)``: ``failures``
    counts skipped utterances by reason (a failing utterance never aborts the chunk),
    ``merged_repaired`` the utterances whose merged words were split back.
    """
    import soundfile as sf
    import torch
    import torchaudio
    from lhotse import Recording, SupervisionSegment
    from lhotse.audio import AudioSource
    from lhotse.supervision import AlignmentItem

    from asr_kd.data.noise import babble_noise, mix_at_snr, pink_noise, white_noise
    from asr_kd.tts.espeak import EspeakError, get_espeak
    from asr_kd.tts.tiers import alignment_tiers, speech_mask, split_merged_words

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    tts = get_espeak()
    resample = torchaudio.transforms.Resample(tts.sample_rate, cfg.sample_rate)
    sr = cfg.sample_rate

    pmap = options.phone_map
    same = (lambda a, b: a == b) if pmap is None else (lambda a, b: pmap.get(a, a) == pmap.get(b, b))
    clean, failures, merged_repaired = [], Counter(), 0
    for spec in specs:
        try:
            syn = tts.synthesize(
                " ".join(spec.words).lower(), voice=spec.voice, rate=spec.rate, pitch=spec.pitch,
                pitch_range=spec.pitch_range, word_gap=spec.word_gap,
                seed=int(rng.integers(2**31)),
            )  # fmt: skip
        except EspeakError as e:
            logger.warning(f"{spec.id}: espeak-ng failed ({e}); skipped")
            failures["synthesis_error"] += 1
            continue
        with torch.no_grad():
            audio = resample(torch.from_numpy(syn.audio)).numpy()
        tiers = alignment_tiers(syn, audio.shape[0], sr)
        if isinstance(tiers, str) and options.split_merged_words and tiers.startswith("word_without_phones"):
            syn = split_merged_words(syn, lambda w, voice=spec.voice: tts.phonemize(w, voice=voice), same)
            tiers = alignment_tiers(syn, audio.shape[0], sr)
            merged_repaired += not isinstance(tiers, str)
        if isinstance(tiers, str):
            logger.warning(f"{spec.id} ({spec.voice}, {' '.join(spec.words)!r}): {tiers}; skipped")
            failures[tiers.split(":")[0]] += 1
            continue
        phones, words = tiers
        if options.phone_map is not None:
            unmapped = sorted(
                {p.symbol for p in phones if p.symbol != SIL and p.symbol not in options.phone_map}
            )
            if unmapped:
                logger.warning(
                    f"{spec.id} ({spec.voice}): espeak-ng phonemes {unmapped} are not in the "
                    f"phone map; skipped"
                )
                failures["unmapped_phone"] += 1
                continue
            phones = [
                p if p.symbol == SIL else AlignmentItem(options.phone_map[p.symbol], p.start, p.duration)
                for p in phones
            ]
        clean.append((spec, audio, phones, words))

    out_dir = Path(wav_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if options.clean_dir is not None:
        Path(options.clean_dir).mkdir(parents=True, exist_ok=True)
    recordings, supervisions, clean_recordings = [], [], []
    for i, (spec, audio, phones, words) in enumerate(clean):
        n = audio.shape[0]
        mask = speech_mask(phones, n, sr)
        if options.noise_floor_db is not None:
            floor = float(np.abs(audio).max()) * 10.0 ** (options.noise_floor_db / 20.0)
            audio = (audio + floor * white_noise(n, rng)).astype(np.float32)
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
                k = min(
                    len(others),
                    int(rng.integers(cfg.babble_talkers[0], cfg.babble_talkers[1] + 1)),
                )
                talkers = rng.choice(others, size=k, replace=False)
                noise = babble_noise(n, [clean[j][1] for j in talkers], rng)
            noisy = mix_at_snr(audio, noise, spec.snr_db, mask)
        gain = spec.peak / max(float(np.abs(noisy).max()), 1e-9)
        noisy = noisy * gain
        path = out_dir / f"{spec.id}.wav"
        sf.write(path, noisy, sr, subtype="PCM_16")
        recordings.append(_recording(spec.id, path, n, sr, Recording, AudioSource))
        if options.clean_dir is not None:
            clean_path = Path(options.clean_dir) / f"{spec.id}.wav"
            sf.write(clean_path, audio * gain, sr, subtype="PCM_16")
            clean_recordings.append(_recording(spec.id, clean_path, n, sr, Recording, AudioSource))
        text = " ".join(spec.words)
        custom = {
            "accent": spec.accent,
            "variant": spec.variant,
            "rate": spec.rate,
            "pitch": spec.pitch,
            "pitch_range": spec.pitch_range,
            "word_gap": spec.word_gap,
            "noise": noise_type,
            "snr_db": None if noise_type == "clean" else spec.snr_db,
        }
        if options.unlabeled:
            custom.update(unlabeled=True, transcript=text)
        supervisions.append(
            SupervisionSegment(
                id=spec.id,
                recording_id=spec.id,
                start=0.0,
                duration=n / sr,
                channel=0,
                text=None if options.unlabeled else text,
                language="English",
                speaker=spec.voice,
                custom=custom,
                alignment={"phone": phones, "word": words},
            )
        )
    return recordings, supervisions, clean_recordings, dict(failures), merged_repaired


def _recording(rec_id: str, path: Path, num_samples: int, sr: int, Recording, AudioSource):
    return Recording(
        id=rec_id,
        sources=[AudioSource(type="file", channels=[0], source=str(path))],
        sampling_rate=sr,
        num_samples=num_samples,
        duration=num_samples / sr,
    )
