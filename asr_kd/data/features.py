"""Features stage: 80-dim log-mel filterbank (lhotse ``Fbank``) for every utterance of a corpus.

Usage::

    from asr_kd.data.features import compute_fbank
    stats = compute_fbank("data/manifests", "synth-digits", "data/fbank", num_jobs=8)

Inputs per split (lhotse recipes or ``data_prep``): ``<manifest_dir>/<corpus>_recordings_<split>.jsonl.gz``
and ``<corpus>_supervisions_<split>.jsonl.gz``. Outputs in ``output_dir``:

- ``<corpus>_cuts_<split>.jsonl.gz``: one cut per supervision (``trim_to_supervisions``), sorted by id,
  with its supervision (text, ``custom``, ``alignment`` tiers) and a ``Features`` manifest. Written
  atomically after the archives. lhotse quirk, kept: supervision times become cut-relative, alignment
  item times stay recording-relative (subtract ``cut.start`` for cut-relative times).
- ``<corpus>_cuts_<split>.done.json``: written last (atomically), it marks the split finished:
  ``{"num_cuts", "num_skipped", "files": {name: {"size", "sha256" (files <= 1 MiB)}}}`` of the cut
  manifest, skip list and every archive (:func:`asr_kd.guard.record_files`). A later run skips the
  split only when every recorded file is still as recorded; otherwise (a truncated or missing archive,
  a manifest without its record) it logs why and recomputes the split.
- ``<corpus>_feats_<split>/feats-NNNNN.lca``: ``LilcomChunkyWriter`` archives, one per shard of
  ``CUTS_PER_SHARD`` consecutive cuts, independent of ``num_jobs``: the output is byte-identical for
  any ``num_jobs``.
- ``<corpus>_skipped_<split>.txt``: always written (empty when nothing was skipped), one line per
  skipped utterance, tab-separated: ``supervision_id reason recording_id detail``.
- ``<corpus>_fbank_config.json``: the resolved extractor config and run settings.

Skip reasons (an utterance is skipped, counted and logged; the run goes on):
``missing_recording`` (supervision names no recording), ``missing_audio`` (file absent),
``unreadable_audio`` (header unreadable, or loading failed during extraction), ``empty_audio``
(0 samples / zero duration), ``truncated_audio`` (the file holds fewer samples than the manifest
says), ``sampling_rate_mismatch`` (the file's rate is not the manifest's), ``non_finite_audio`` (NaN
or infinite samples), ``non_finite_features``, ``segment_outside_recording`` (start/duration/channel
not inside the recording), ``empty_transcript`` (unless the supervision is marked ``custom["unlabeled"] = True``, as
the unlabeled ``transfer`` split of ``synth_rm`` is), ``duplicate_id``, ``extraction_failed``.
Recordings whose manifest names another sampling rate are resampled, not skipped.

Guarantees: the stage holds :func:`asr_kd.guard.stage_lock` on ``output_dir`` (a second run on it is
refused) and removes temporaries of a killed run. An error writing the output (disk full, file-size
limit, I/O error) is not a skipped utterance: it stops the stage with
:class:`asr_kd.guard.OutputIOError`, the split is left unfinished and a rerun recomputes it. A split
that skipped more than ``max_skipped_share`` of its utterances fails
(:class:`asr_kd.guard.TooManySkippedError`) after writing its skip list, and is not marked finished.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import lhotse
import numpy as np
import soundfile
import torch
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, RecordingSet, SupervisionSet
from lhotse.cut import Cut
from lhotse.features import Features
from lhotse.qa import validate_features
from lhotse.utils import compute_num_frames_from_samples, fastcopy, is_equal_or_contains
from tqdm import tqdm

from asr_kd.guard import (
    DEFAULT_MAX_SKIPPED_SHARE,
    check_skipped_share,
    raise_if_output_error,
    record_files,
    remove_stale_temporaries,
    stage_lock,
    verify_files,
)
from asr_kd.utils import atomic_output, resolve_device, write_json, write_text

logger = logging.getLogger(__name__)

CUTS_PER_SHARD = 250  # cuts per feature archive (and per parallel task)
BATCH_DURATION = 600.0  # seconds of padded audio per batched (GPU) extraction call
_TIME_TOLERANCE = 1e-3  # seconds; same slack as lhotse.qa for supervision bounds
_LENGTH_TOLERANCE = 0.025  # seconds a file may be shorter than its manifest says (lhotse's default)


@dataclass(frozen=True)
class SkippedUtterance:
    """One utterance left out of the cut manifest, and why."""

    supervision_id: str
    recording_id: str
    reason: str
    detail: str  # audio file path and/or error message

    def line(self) -> str:
        detail = " ".join(self.detail.split())  # one line, no tabs
        return f"{self.supervision_id}\t{self.reason}\t{self.recording_id}\t{detail}"

    def warn(self) -> None:
        logger.warning(
            "skipping utterance %s (recording %s): %s: %s",
            self.supervision_id, self.recording_id, self.reason, self.detail,
        )  # fmt: skip


def compute_fbank(
    manifest_dir: Path | str,
    corpus: str,
    output_dir: Path | str,
    splits: Sequence[str] | None = None,
    num_jobs: int = 1,
    device: str = "auto",
    num_mel_bins: int = 80,
    sampling_rate: int = 16000,
    max_skipped_share: float = DEFAULT_MAX_SKIPPED_SHARE,
    *,
    _batched: bool | None = None,
    _cuts_per_shard: int = CUTS_PER_SHARD,
) -> dict[str, dict]:
    """Compute and store fbank features (``num_mel_bins`` bins, 10 ms frames) for each split.

    Args:
        manifest_dir: directory with ``<corpus>_{recordings,supervisions}_<split>.jsonl.gz``.
        corpus: corpus name, the manifests' file-name prefix.
        output_dir: where cuts, feature archives, skip lists and the config go.
        splits: splits to process; None: every ``<corpus>_recordings_<split>.jsonl.gz`` found.
        num_jobs: worker processes on CPU (started with "spawn": a script calling this with
            num_jobs > 1 needs the ``if __name__ == "__main__":`` guard); audio-loading threads
            in batched (CUDA) mode.
        device: "auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N". On CUDA the
            extraction is batched in this process.
        num_mel_bins: feature dimension.
        sampling_rate: target rate in Hz; other recordings are resampled to it.
        max_skipped_share: a split whose skipped share of utterances is above this fails.
        _batched: force (True) or forbid (False) batched extraction; None: batched iff CUDA.
        _cuts_per_shard: cuts per feature archive (tests use small values).

    Returns:
        split -> stats: ``num_cuts``, ``num_skipped``, ``skipped_by_reason``, ``num_resampled``,
        ``hours`` (of audio written), ``seconds`` (wall time), ``x_real_time`` (audio / wall time);
        ``already_done: True`` (and ``num_cuts``) for splits finished by an earlier run.

    Raises:
        FileNotFoundError: no manifests found, or a split's manifest missing.
        ValueError: a split has no usable utterance.
        StageError: another run holds ``output_dir``.
        OutputIOError: writing the output failed (disk full, file too large, I/O error).
        TooManySkippedError: a split skipped more than ``max_skipped_share``.
    """
    manifest_dir, output_dir = Path(manifest_dir), Path(output_dir)
    if num_jobs < 1:
        raise ValueError(f"num_jobs must be >= 1, got {num_jobs}")
    device = str(resolve_device(device))
    batched = device.startswith("cuda") if _batched is None else _batched
    if splits is None:
        splits = _find_splits(manifest_dir, corpus)
    config = FbankConfig(num_mel_bins=num_mel_bins, sampling_rate=sampling_rate, device=device)
    with stage_lock(output_dir, "features"):
        remove_stale_temporaries(output_dir, (".tmp.*", f"{corpus}_feats_*/.tmp.*"))
        try:
            write_json(
                output_dir / f"{corpus}_fbank_config.json",
                {
                    "extractor": Fbank.name,
                    "extractor_config": config.to_dict(),
                    "sampling_rate": sampling_rate,
                    "num_jobs": num_jobs,
                    "device": device,
                    "batched": batched,
                    "cuts_per_shard": _cuts_per_shard,
                    "max_skipped_share": max_skipped_share,
                    "storage": LilcomChunkyWriter.name,
                    "lhotse_version": lhotse.__version__,
                },
            )
            return {
                split: _compute_split(
                    manifest_dir, corpus, output_dir, split, config, num_jobs, batched, _cuts_per_shard,
                    max_skipped_share,
                )  # fmt: skip
                for split in splits
            }
        except OSError as exc:  # the manifest, skip list, config or an archive could not be written
            raise_if_output_error(exc, output_dir)
            raise


def _find_splits(manifest_dir: Path, corpus: str) -> list[str]:
    prefix, suffix = f"{corpus}_recordings_", ".jsonl.gz"
    names = (p.name for p in manifest_dir.glob(f"{prefix}*{suffix}"))
    found = sorted(n[len(prefix) : -len(suffix)] for n in names)
    if not found:
        raise FileNotFoundError(
            f"no recording manifests {prefix}<split>{suffix} in {manifest_dir}: run the prepare stage first"
        )
    return found


def _load_manifests(manifest_dir: Path, corpus: str, split: str) -> tuple[RecordingSet, SupervisionSet]:
    kinds = ("recordings", "supervisions")
    paths = {kind: manifest_dir / f"{corpus}_{kind}_{split}.jsonl.gz" for kind in kinds}
    for kind, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(
                f"missing {kind} manifest {path} for split '{split}': expected lhotse manifests "
                f"{corpus}_recordings_{split}.jsonl.gz and {corpus}_supervisions_{split}.jsonl.gz "
                f"in {manifest_dir} (written by the prepare stage)"
            )
    return RecordingSet.from_file(paths["recordings"]), SupervisionSet.from_file(paths["supervisions"])


def _compute_split(
    manifest_dir: Path,
    corpus: str,
    output_dir: Path,
    split: str,
    config: FbankConfig,
    num_jobs: int,
    batched: bool,
    cuts_per_shard: int,
    max_skipped_share: float,
) -> dict:
    cuts_path = output_dir / f"{corpus}_cuts_{split}.jsonl.gz"
    done_path = output_dir / f"{corpus}_cuts_{split}.done.json"
    finished = _finished_split(done_path, output_dir)
    if finished is not None:
        logger.info("%s: already done (%s verified, %d cuts), skipping", split, done_path, finished)
        return {"already_done": True, "num_cuts": finished}
    # nothing of an earlier, unfinished or damaged run may look finished while this one works
    done_path.unlink(missing_ok=True)
    cuts_path.unlink(missing_ok=True)
    recordings, supervisions = _load_manifests(manifest_dir, corpus, split)
    cuts, skipped, num_resampled = _make_cuts(recordings, supervisions, config.sampling_rate)
    if not cuts:
        raise ValueError(
            f"split '{split}' of {corpus} has no usable utterance: {_reason_summary(skipped)}"
        )

    feats_dir = output_dir / f"{corpus}_feats_{split}"
    if feats_dir.exists():  # left by an interrupted run: its manifest was never written
        shutil.rmtree(feats_dir)
    feats_dir.mkdir(parents=True)
    shards = [cuts[i : i + cuts_per_shard] for i in range(0, len(cuts), cuts_per_shard)]
    storage_paths = [str(feats_dir / f"feats-{i:05d}") for i in range(len(shards))]
    start = time.perf_counter()
    with tqdm(total=len(cuts), desc=f"fbank {split}", unit="cut") as pbar:
        if batched:
            results = _run_batched(shards, storage_paths, config, num_jobs, pbar.update)
        else:
            results = _run_per_cut(shards, storage_paths, config, num_jobs, pbar.update)
    seconds = time.perf_counter() - start
    done = [cut for shard_cuts, _ in results for cut in shard_cuts]
    for item in (item for _, shard_skipped in results for item in shard_skipped):
        item.warn()
        skipped.append(item)
    if not done:
        raise ValueError(
            f"split '{split}' of {corpus}: every utterance failed: {_reason_summary(skipped)}"
        )

    skipped.sort(key=lambda s: s.supervision_id)
    skipped_path = output_dir / f"{corpus}_skipped_{split}.txt"
    write_text(skipped_path, "".join(s.line() + "\n" for s in skipped))
    check_skipped_share(
        len(skipped), len(skipped) + len(done), max_skipped_share,
        f"features of {corpus} split '{split}' (skip list {skipped_path})",
    )  # fmt: skip
    with atomic_output(cuts_path) as tmp:
        CutSet.from_cuts(done).to_file(tmp)
    archives = sorted(feats_dir.glob("*.lca"))
    record = record_files([cuts_path, skipped_path, *archives], root=output_dir)
    write_json(done_path, {"num_cuts": len(done), "num_skipped": len(skipped), "files": record})  # last

    audio_seconds = sum(cut.duration for cut in done)
    stats = {
        "num_cuts": len(done),
        "num_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(Counter(s.reason for s in skipped).items())),
        "num_resampled": num_resampled,
        "hours": audio_seconds / 3600,
        "seconds": seconds,
        "x_real_time": audio_seconds / max(seconds, 1e-9),
    }
    logger.info(
        "%s: %d cuts written, %d skipped (%s); %.3f h of audio in %.1f s (%.0fx real time)",
        split, len(done), len(skipped), _reason_summary(skipped) or "none", stats["hours"], seconds,
        stats["x_real_time"],
    )  # fmt: skip
    return stats


def _finished_split(done_path: Path, output_dir: Path) -> int | None:
    """The number of cuts of a split finished earlier, or None (logging why) if it must be (re)done."""
    if not done_path.is_file():
        cuts_path = done_path.with_name(done_path.name.replace(".done.json", ".jsonl.gz"))
        if cuts_path.is_file():
            logger.warning("%s has no record %s (unfinished or older run): recomputing", cuts_path, done_path)
        return None
    try:
        done = json.loads(done_path.read_text())
        num_cuts, record = int(done["num_cuts"]), done["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("%s is unreadable (%s): recomputing the split", done_path, exc)
        return None
    problems = verify_files(record, root=output_dir)
    if problems:
        logger.warning(
            "%s: the finished split's files changed (%s%s): recomputing it",
            done_path, "; ".join(problems[:5]), f"; {len(problems) - 5} more" if len(problems) > 5 else "",
        )  # fmt: skip
        return None
    return num_cuts


def _reason_summary(skipped: Sequence[SkippedUtterance]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(Counter(s.reason for s in skipped).items()))


def _audio_paths(recording) -> list[str]:
    return [src.source for src in recording.sources if src.type == "file"]


def _check_recording(recording) -> tuple[str, str] | None:
    """Cheap checks (file existence, soundfile header): None if fine, else (reason, detail)."""
    paths = _audio_paths(recording)
    for path in paths:
        if not Path(path).is_file():
            return "missing_audio", path
        try:
            info = soundfile.info(path)
        except Exception as exc:  # libsndfile: unknown format, garbage bytes, ...
            return "unreadable_audio", f"{path}: {exc}"
        if info.frames == 0:
            return "empty_audio", f"{path}: 0 samples"
        if info.samplerate != recording.sampling_rate:
            return "sampling_rate_mismatch", (
                f"{path}: the file is {info.samplerate} Hz but the recordings manifest says "
                f"{recording.sampling_rate} Hz (a stale or wrong manifest: prepare it again)"
            )
        missing = recording.num_samples - info.frames
        if len(paths) == 1 and missing > _LENGTH_TOLERANCE * recording.sampling_rate:
            return "truncated_audio", (
                f"{path}: the file holds {info.frames} samples ({info.frames / info.samplerate:.3f} s) but the "
                f"manifest says {recording.num_samples} ({recording.duration:.3f} s): the file is truncated "
                "or the manifest is stale"
            )
    if recording.num_samples == 0 or recording.duration <= 0:
        where = ",".join(paths) or recording.id
        return "empty_audio", f"{where}: duration {recording.duration} s in manifest"
    return None


def _check_supervision(sup, recording) -> tuple[str, str] | None:
    """None if ``sup`` is a usable utterance of ``recording``, else (reason, detail)."""
    if not (
        sup.duration > 0
        and -_TIME_TOLERANCE <= sup.start
        and sup.end <= recording.duration + _TIME_TOLERANCE
        and is_equal_or_contains(recording.channel_ids, sup.channel)
    ):
        return "segment_outside_recording", (
            f"segment [{sup.start}, {sup.end}] s channel {sup.channel} not inside recording "
            f"[0, {recording.duration}] s channels {recording.channel_ids}"
        )
    if (sup.text is None or not sup.text.strip()) and not (sup.custom or {}).get("unlabeled"):
        return "empty_transcript", f"text {sup.text!r} (only supervisions with custom['unlabeled'] may lack text)"
    return None


def _make_cuts(
    recordings: RecordingSet, supervisions: SupervisionSet, sampling_rate: int
) -> tuple[list[Cut], list[SkippedUtterance], int]:
    """Validate; one cut per good supervision, sorted by id, resampled to ``sampling_rate`` Hz."""
    recordings_by_id = {rec.id: rec for rec in recordings}
    recording_problems: dict[str, tuple[str, str] | None] = {}
    good, skipped, seen = [], [], set()
    for sup in supervisions:
        rec = recordings_by_id.get(sup.recording_id)
        if sup.id in seen:
            problem = ("duplicate_id", "supervision id already used")
        elif rec is None:
            problem = ("missing_recording", "recording id not in the recordings manifest")
        else:
            if rec.id not in recording_problems:
                recording_problems[rec.id] = _check_recording(rec)
            problem = recording_problems[rec.id] or _check_supervision(sup, rec)
        seen.add(sup.id)
        if problem is None:
            good.append(sup)
        else:
            skipped.append(SkippedUtterance(sup.id, sup.recording_id, *problem))
            skipped[-1].warn()
    if not good:
        return [], skipped, 0
    used_ids = sorted({s.recording_id for s in good})
    used = RecordingSet.from_recordings(recordings_by_id[rid] for rid in used_ids)
    cuts = CutSet.from_manifests(recordings=used, supervisions=SupervisionSet.from_segments(good))
    cuts = sorted(cuts.trim_to_supervisions(keep_overlapping=False), key=lambda cut: cut.id)
    other_rates = Counter(cut.sampling_rate for cut in cuts if cut.sampling_rate != sampling_rate)
    if other_rates:
        cuts = [cut if cut.sampling_rate == sampling_rate else cut.resample(sampling_rate) for cut in cuts]
        logger.info(
            "resampled %d cuts to %d Hz (from: %s)",
            sum(other_rates.values()), sampling_rate, dict(sorted(other_rates.items())),
        )  # fmt: skip
    return cuts, skipped, sum(other_rates.values())


# ----------------------------------------------------------------------------- extraction


def _store(
    cut: Cut, feats: np.ndarray, num_samples: int, writer: LilcomChunkyWriter, frame_shift: float
) -> Cut:
    """Write ``feats`` (frames, bins) and return ``cut`` with its ``Features`` manifest."""
    manifest = Features(
        start=cut.start,
        duration=round(num_samples / cut.sampling_rate, ndigits=8),
        type=Fbank.name,
        num_frames=feats.shape[0],
        num_features=feats.shape[1],
        frame_shift=frame_shift,
        sampling_rate=cut.sampling_rate,
        channels=cut.channel,
        storage_type=writer.name,
        storage_path=str(writer.storage_path),
        storage_key=writer.write(cut.id, feats),
        recording_id=cut.recording_id,
    )
    validate_features(manifest, feats_data=feats)
    return fastcopy(cut, features=manifest)


def _load_audio(cut: Cut) -> tuple[np.ndarray | None, SkippedUtterance | None]:
    """(samples (channels, samples), None), or (None, why not)."""
    path = ",".join(_audio_paths(cut.recording)) or cut.recording_id
    try:
        samples = cut.load_audio()
    except Exception as exc:  # decoder errors, truncated files, length mismatches
        return None, SkippedUtterance(cut.id, cut.recording_id, "unreadable_audio", f"{path}: {_error_text(exc)}")
    if samples.shape[-1] == 0:
        return None, SkippedUtterance(cut.id, cut.recording_id, "empty_audio", f"{path}: 0 samples loaded")
    bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
    if bad:
        return None, SkippedUtterance(
            cut.id, cut.recording_id, "non_finite_audio",
            f"{path}: non-finite samples: {bad} of {np.size(samples)} are NaN or infinite",
        )  # fmt: skip
    return samples, None


def _error_text(exc: Exception) -> str:
    """What went wrong loading audio, in one line, without lhotse's "report this issue" boilerplate."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    useful = [line for line in lines if "Lhotse" not in line and "report" not in line.lower()]
    text = (useful or lines or [type(exc).__name__])[0]
    return text[:300]


def _extract_shard(
    cuts: list[Cut],
    storage_path: str,
    config: FbankConfig,
    batch_duration: float,
    progress: Callable[[int], object] | None = None,
    loader: ThreadPoolExecutor | None = None,
) -> tuple[list[Cut], list[SkippedUtterance]]:
    """Extract one shard into one archive, ``batch_duration`` seconds of padded audio per call
    (0: one cut per call); audio is loaded by ``loader``'s threads, or here when None."""
    extractor = Fbank(config)
    done, skipped = [], []
    try:
        with LilcomChunkyWriter(storage_path) as writer:
            for batch in _batches_by_duration(cuts, batch_duration):
                audio = list(loader.map(_load_audio, batch) if loader else map(_load_audio, batch))
                batch_done, batch_skipped = _extract_batch_safely(extractor, batch, audio, writer)
                done += batch_done
                skipped += batch_skipped
                if progress is not None:
                    progress(len(batch))
    except OSError as exc:  # opening, or flushing at close: the output, never an utterance
        raise_if_output_error(exc, f"{storage_path}.lca")  # the name LilcomChunkyWriter gives it
        raise
    return done, skipped


def _init_worker() -> None:
    torch.set_num_threads(1)


def _run_per_cut(shards, storage_paths, config, num_jobs, progress) -> list[tuple[list[Cut], list]]:
    """CPU: one cut at a time, shards in ``num_jobs`` processes (here when 1); results in shard order."""
    if num_jobs == 1 or len(shards) == 1:
        return [_extract_shard(s, p, config, 0.0, progress) for s, p in zip(shards, storage_paths)]
    results: dict[int, tuple] = {}
    with ProcessPoolExecutor(
        min(num_jobs, len(shards)), mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
    ) as pool:
        futures = {
            pool.submit(_extract_shard, shard, path, config, 0.0): i
            for i, (shard, path) in enumerate(zip(shards, storage_paths))
        }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            progress(len(shards[futures[future]]))
    return [results[i] for i in range(len(shards))]


def _run_batched(shards, storage_paths, config, num_jobs, progress) -> list[tuple[list[Cut], list]]:
    """One process: ``num_jobs`` threads load audio, ``Fbank.extract_batch`` on ``config.device``."""
    with ThreadPoolExecutor(num_jobs) as loader:
        return [
            _extract_shard(shard, path, config, BATCH_DURATION, progress, loader)
            for shard, path in zip(shards, storage_paths)
        ]


def _fbank_batch(extractor: Fbank, waveforms: list[torch.Tensor], sampling_rate: int) -> list[np.ndarray]:
    """Batched fbank of 1-D waveforms; returns (frames, bins) arrays equal to per-cut ``extract``.

    ``extract_batch`` zero-pads to the longest waveform, so a short waveform's last frame would see
    zeros where the per-cut path sees its reflected tail (snip_edges=False). Appending that tail
    before padding makes every frame identical to the per-cut result.
    """
    cfg = extractor.config
    shift = round(cfg.frame_shift * sampling_rate)
    length = round(cfg.frame_length * sampling_rate)
    num_frames = [compute_num_frames_from_samples(len(w), cfg.frame_shift, sampling_rate) for w in waveforms]
    padded = []
    for wave, frames in zip(waveforms, num_frames):
        npad_right = (frames - 1) * shift + length - len(wave) - (length - shift) // 2
        tail = torch.flip(wave[len(wave) - npad_right :], (0,)) if 0 < npad_right <= len(wave) else wave[:0]
        padded.append(torch.cat([wave, tail]))
    with torch.inference_mode():
        feats = extractor.extract_batch(padded, sampling_rate=sampling_rate)
    return [f[:n].detach().cpu().numpy() for f, n in zip(feats, num_frames)]


def _extract_batch_safely(
    extractor: Fbank, batch: list[Cut], audio: list, writer: LilcomChunkyWriter
) -> tuple[list[Cut], list[SkippedUtterance]]:
    """Batched fbank of loaded ``audio`` for ``batch``; if the batch call fails, one cut at a time."""
    skipped = [problem for _, problem in audio if problem is not None]
    good = [(cut, torch.from_numpy(s[0])) for cut, (s, _) in zip(batch, audio) if s is not None]
    rate = extractor.config.sampling_rate
    try:
        feats: list = _fbank_batch(extractor, [wave for _, wave in good], rate) if good else []
    except Exception as exc:  # e.g. CUDA out of memory
        logger.warning("batched extraction failed (%r); extracting one cut at a time", exc)
        feats = [None] * len(good)
    done = []
    for (cut, wave), cut_feats in zip(good, feats):
        try:
            if cut_feats is None:
                cut_feats = _fbank_batch(extractor, [wave], rate)[0]
            bad = int(cut_feats.size - np.count_nonzero(np.isfinite(cut_feats)))
            if bad:
                skipped.append(SkippedUtterance(
                    cut.id, cut.recording_id, "non_finite_features",
                    f"{bad} of {cut_feats.size} fbank values are NaN or infinite",
                ))  # fmt: skip
                continue
            done.append(_store(cut, cut_feats, len(wave), writer, extractor.frame_shift))
        except Exception as exc:
            raise_if_output_error(exc, writer.storage_path)  # a full disk is not a bad utterance
            skipped.append(SkippedUtterance(cut.id, cut.recording_id, "extraction_failed", repr(exc)[:300]))
    return done, skipped


def _batches_by_duration(cuts: list[Cut], max_duration: float) -> list[list[Cut]]:
    """Consecutive batches whose padded size (count x longest, seconds) stays within ``max_duration``."""
    batches: list[list[Cut]] = [[]]
    longest = 0.0
    for cut in cuts:
        longest = max(longest, cut.duration)
        if batches[-1] and (len(batches[-1]) + 1) * longest > max_duration:
            batches.append([])
            longest = cut.duration
        batches[-1].append(cut)
    return [batch for batch in batches if batch]
