"""Tests of the features stage on a tiny corpus built here (sine tones + noise, 16 and 8 kHz)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import (
    CutSet,
    Fbank,
    FbankConfig,
    Recording,
    RecordingSet,
    SupervisionSegment,
    SupervisionSet,
)
from lhotse.audio import AudioSource
from lhotse.supervision import AlignmentItem

from asr_kd.data import features
from asr_kd.data.features import compute_fbank

CORPUS = "toy"
LILCOM_ATOL = 2**-6 + 1e-6  # LilcomChunkyWriter default tick 2^-5: rounding error <= half a tick
PHONES = [AlignmentItem("h", 0.05, 0.2), AlignmentItem("ay", 0.25, 0.35)]
WORDS = [AlignmentItem("HI", 0.05, 0.55)]
A2_WORDS = [AlignmentItem("THERE", 0.8, 0.6)]  # recording time, inside a-2 = [0.7, 1.5]
EXPECTED_SKIPS = {
    "bad-span": "segment_outside_recording",
    "blank-text": "empty_transcript",
    "empty-1": "empty_audio",
    "garbage-1": "unreadable_audio",
    "missing-1": "missing_audio",
    "norec-1": "missing_recording",
    "trunc-1": "truncated_audio",  # header fine, fewer samples than the manifest says
}
GOOD_IDS = ["a-1", "a-2", "b-1", "c-1"]


def _tone(seconds: float, rate: int, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * noise).astype(np.float32)


def _wav(directory: Path, name: str, samples: np.ndarray, rate: int) -> Path:
    path = directory / f"{name}.wav"
    sf.write(path, samples, rate)
    return path


def _sup(sup_id: str, rec_id: str, start: float, duration: float, text: str = "HI", **kw):
    return SupervisionSegment(id=sup_id, recording_id=rec_id, start=start, duration=duration, text=text, **kw)


def build_corpus(root: Path) -> Path:
    """Manifests for split 'train' (good + every kind of bad utterance) and 'dev' (one good)."""
    audio, manifests = root / "audio", root / "manifests"
    audio.mkdir(parents=True)
    manifests.mkdir()
    recs = {
        "a": Recording.from_file(_wav(audio, "a", _tone(1.5, 16000), 16000)),
        "b": Recording.from_file(_wav(audio, "b", _tone(1.0, 16000, 300.0, 1), 16000)),
        "c": Recording.from_file(_wav(audio, "c", _tone(1.2, 8000, 440.0, 2), 8000)),
        "empty": Recording.from_file(_wav(audio, "empty", np.zeros(0, np.float32), 16000)),
    }
    missing = _wav(audio, "missing", _tone(1.0, 16000), 16000)
    recs["missing"] = Recording.from_file(missing)
    missing.unlink()
    trunc = _wav(audio, "trunc", _tone(1.0, 16000), 16000)
    recs["trunc"] = Recording.from_file(trunc)
    trunc.write_bytes(trunc.read_bytes()[:10000])  # libsndfile reports ~5000 samples, manifest 16000
    garbage = audio / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(3).bytes(4000))
    recs["garbage"] = Recording(
        id="garbage",
        sources=[AudioSource(type="file", channels=[0], source=str(garbage))],
        sampling_rate=16000,
        num_samples=16000,
        duration=1.0,
    )
    alignment = {"phone": PHONES, "word": WORDS}
    train_sups = [
        _sup("a-2", "a", 0.7, 0.8, "THERE", alignment={"word": A2_WORDS}),  # out of order: output is sorted
        _sup("a-1", "a", 0.0, 0.7, "HI", alignment=alignment, custom={"speaker_age": 33}),
        _sup("b-1", "b", 0.0, 0.5, "B"),
        _sup("blank-text", "b", 0.5, 0.4, "  \t"),
        _sup("bad-span", "b", 0.8, 0.5),
        _sup("c-1", "c", 0.1, 1.0, "C"),
        _sup("empty-1", "empty", 0.0, 0.5),
        _sup("missing-1", "missing", 0.0, 1.0),
        _sup("garbage-1", "garbage", 0.0, 1.0),
        _sup("trunc-1", "trunc", 0.0, 1.0),
        _sup("norec-1", "no-such-recording", 0.0, 1.0),
    ]
    RecordingSet.from_recordings(recs.values()).to_file(manifests / f"{CORPUS}_recordings_train.jsonl.gz")
    SupervisionSet.from_segments(train_sups).to_file(manifests / f"{CORPUS}_supervisions_train.jsonl.gz")
    RecordingSet.from_recordings([recs["b"]]).to_file(manifests / f"{CORPUS}_recordings_dev.jsonl.gz")
    SupervisionSet.from_segments([_sup("d-1", "b", 0.0, 1.0, "D")]).to_file(
        manifests / f"{CORPUS}_supervisions_dev.jsonl.gz"
    )
    return manifests


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One per-cut run (num_jobs=1, shards of 2 cuts) over both splits, with its log records."""
    root = tmp_path_factory.mktemp("features")
    manifests = build_corpus(root)
    handler = _Records()
    logging.getLogger(features.__name__).addHandler(handler)
    logging.getLogger(features.__name__).setLevel(logging.INFO)
    try:
        stats = compute_fbank(
            manifests, CORPUS, root / "fbank", num_jobs=1, device="cpu", max_skipped_share=1.0, _cuts_per_shard=2
        )
    finally:
        logging.getLogger(features.__name__).removeHandler(handler)
    return {"root": root, "manifests": manifests, "out": root / "fbank", "stats": stats, "logs": handler.records}


def _cuts(out: Path, split: str = "train") -> list:
    return list(CutSet.from_file(out / f"{CORPUS}_cuts_{split}.jsonl.gz"))


def _direct_fbank(cut) -> np.ndarray:
    """Fbank straight from the wav file with soundfile (16 kHz recordings only)."""
    samples, rate = sf.read(cut.recording.sources[0].source, dtype="float32")
    first = int(round(cut.start * rate))
    segment = samples[first : first + int(round(cut.duration * rate))]
    return Fbank(FbankConfig(num_mel_bins=80)).extract(segment, rate)


def test_features_match_direct_fbank(run):
    cuts = _cuts(run["out"])
    assert [c.id for c in cuts] == GOOD_IDS
    for cut in cuts:
        feats = cut.load_features()
        assert feats.shape == (cut.num_frames, 80)
        assert abs(feats.shape[0] - round(cut.duration * 100)) <= 2
        assert cut.sampling_rate == 16000
        if cut.recording_id != "c":
            reference = _direct_fbank(cut)
            assert reference.shape == feats.shape
            np.testing.assert_allclose(feats, reference, atol=LILCOM_ATOL, rtol=0)
    stats = run["stats"]
    assert set(stats) == {"dev", "train"}  # splits=None found both
    assert stats["train"]["num_cuts"] == 4 and stats["dev"]["num_cuts"] == 1
    assert stats["train"]["hours"] == pytest.approx((0.7 + 0.8 + 0.5 + 1.0) / 3600)
    assert stats["train"]["x_real_time"] > 0
    assert len(list((run["out"] / f"{CORPUS}_feats_train").glob("feats-*.lca"))) == 2  # 4 cuts / 2


def test_skips_counted_listed_and_logged(run):
    stats = run["stats"]["train"]
    expected_counts = {"empty_audio": 1, "empty_transcript": 1, "missing_audio": 1, "missing_recording": 1,
                       "segment_outside_recording": 1, "truncated_audio": 1, "unreadable_audio": 1}  # fmt: skip
    assert stats["skipped_by_reason"] == expected_counts
    assert stats["num_skipped"] == 7
    lines = (run["out"] / f"{CORPUS}_skipped_train.txt").read_text().splitlines()
    assert {line.split("\t")[0]: line.split("\t")[1] for line in lines} == EXPECTED_SKIPS
    assert (run["out"] / f"{CORPUS}_skipped_dev.txt").read_text() == ""  # always written
    warnings = [r.getMessage() for r in run["logs"] if r.levelno == logging.WARNING]
    assert len(warnings) == 7
    missing_warning = next(w for w in warnings if "missing-1" in w)
    assert "missing_audio" in missing_warning and "missing.wav" in missing_warning
    assert any("trunc-1" in w and "trunc.wav" in w for w in warnings)
    summary = [r.getMessage() for r in run["logs"] if "cuts written" in r.getMessage()]
    assert any(s.startswith("train: 4 cuts written, 7 skipped (empty_audio: 1,") for s in summary)


def test_8khz_recording_is_resampled(run):
    cut = next(c for c in _cuts(run["out"]) if c.id == "c-1")
    assert cut.sampling_rate == 16000 and cut.recording.sampling_rate == 16000
    assert run["stats"]["train"]["num_resampled"] == 1
    assert any("resampled 1 cuts to 16000 Hz" in r.getMessage() for r in run["logs"])
    feats = cut.load_features()
    assert feats.shape == (100, 80)  # 1.0 s
    # The 440 Hz tone peaks in the same mel bin as the same tone recorded at 16 kHz.
    reference = Fbank(FbankConfig(num_mel_bins=80)).extract(_tone(1.0, 16000, 440.0), 16000)
    assert np.argmax(feats.mean(axis=0)) == np.argmax(reference.mean(axis=0))


def test_supervision_alignment_and_custom_survive(run):
    cut = next(c for c in _cuts(run["out"]) if c.id == "a-1")
    assert len(cut.supervisions) == 1
    sup = cut.supervisions[0]
    assert (sup.id, sup.text, sup.start, sup.duration) == ("a-1", "HI", 0.0, 0.7)
    assert sup.alignment == {"phone": PHONES, "word": WORDS}
    assert sup.custom == {"speaker_age": 33}
    assert cut.start == 0.0 and cut.duration == 0.7
    a2 = next(c for c in _cuts(run["out"]) if c.id == "a-2")
    assert (a2.start, a2.duration, a2.supervisions[0].start) == (0.7, 0.8, 0.0)
    # lhotse quirk, kept as is: the supervision moves to cut time, its alignment stays in recording time.
    assert a2.supervisions[0].alignment == {"word": A2_WORDS}


def test_config_written(run):
    config = json.loads((run["out"] / f"{CORPUS}_fbank_config.json").read_text())
    assert config["extractor_config"]["num_filters"] == 80
    assert config["sampling_rate"] == 16000 and config["device"] == "cpu" and config["batched"] is False
    assert config["lhotse_version"]


def _tree_bytes(out: Path) -> dict[str, bytes]:
    """Every output file's bytes, with the output directory replaced by a placeholder."""
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and not path.name.endswith(".json") and not path.name.startswith(".lock-"):
            data = path.read_bytes()
            if path.name.endswith(".jsonl.gz"):
                data = "".join(c.to_dict().__repr__() + "\n" for c in CutSet.from_file(path)).encode()
            files[str(path.relative_to(out))] = data.replace(str(out).encode(), b"OUT")
    return files


def test_num_jobs_2_gives_identical_output(run):
    out2 = run["root"] / "fbank-2jobs"
    stats = compute_fbank(
        run["manifests"], CORPUS, out2, num_jobs=2, device="cpu", max_skipped_share=1.0, _cuts_per_shard=2
    )
    assert stats["train"]["skipped_by_reason"] == run["stats"]["train"]["skipped_by_reason"]
    assert _tree_bytes(out2) == _tree_bytes(run["out"])


def test_batched_path_matches_per_cut(run):
    out_b = run["root"] / "fbank-batched"
    stats = compute_fbank(
        run["manifests"], CORPUS, out_b, splits=["train"], device="cpu", max_skipped_share=1.0, _batched=True,
        _cuts_per_shard=2,
    )
    assert stats["train"]["skipped_by_reason"] == run["stats"]["train"]["skipped_by_reason"]
    assert json.loads((out_b / f"{CORPUS}_fbank_config.json").read_text())["batched"] is True
    for per_cut, batched in zip(_cuts(run["out"]), _cuts(out_b), strict=True):
        assert per_cut.id == batched.id and per_cut.num_frames == batched.num_frames
        np.testing.assert_allclose(batched.load_features(), per_cut.load_features(), atol=2**-5 + 1e-6, rtol=0)


def test_batches_by_duration_bounds_padded_size(run):
    cuts = _cuts(run["out"])  # durations 0.7, 0.8, 0.5, 1.0
    batches = features._batches_by_duration(cuts, max_duration=1.6)
    assert [[c.id for c in b] for b in batches] == [["a-1", "a-2"], ["b-1"], ["c-1"]]


def test_rerun_skips_finished_split(run, caplog):
    manifest = run["out"] / f"{CORPUS}_cuts_train.jsonl.gz"
    before = manifest.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger=features.__name__):
        stats = compute_fbank(run["manifests"], CORPUS, run["out"], splits=["train"], device="cpu")
    assert stats == {"train": {"already_done": True, "num_cuts": 4}}
    assert manifest.stat().st_mtime_ns == before
    assert "train: already done" in caplog.text


def test_interrupted_run_leaves_no_manifest_then_resumes(run, monkeypatch):
    out = run["root"] / "fbank-interrupted"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(features, "_run_per_cut", crash)
    with pytest.raises(KeyboardInterrupt):
        compute_fbank(run["manifests"], CORPUS, out, splits=["dev"], device="cpu")
    assert not (out / f"{CORPUS}_cuts_dev.jsonl.gz").exists()
    monkeypatch.undo()
    stale = out / f"{CORPUS}_feats_dev" / "feats-99999.lca"
    stale.write_bytes(b"stale")
    stats = compute_fbank(run["manifests"], CORPUS, out, splits=["dev"], device="cpu")
    assert stats["dev"]["num_cuts"] == 1 and not stale.exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp.")]


def test_missing_manifest_raises_with_file_name(run, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{CORPUS}_recordings_test.jsonl.gz"):
        compute_fbank(run["manifests"], CORPUS, tmp_path / "out", splits=["test"], device="cpu")
    with pytest.raises(FileNotFoundError, match="other_recordings_<split>.jsonl.gz"):
        compute_fbank(run["manifests"], "other", tmp_path / "out", device="cpu")


def test_split_without_usable_cuts_raises(tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    path = _wav(tmp_path, "gone", _tone(0.5, 16000), 16000)
    rec = Recording.from_file(path, recording_id="gone")
    os.remove(path)
    RecordingSet.from_recordings([rec]).to_file(manifests / f"{CORPUS}_recordings_bad.jsonl.gz")
    SupervisionSet.from_segments([_sup("g-1", "gone", 0.0, 0.5)]).to_file(
        manifests / f"{CORPUS}_supervisions_bad.jsonl.gz"
    )
    with pytest.raises(ValueError, match=r"split 'bad' of toy has no usable utterance: missing_audio: 1"):
        compute_fbank(manifests, CORPUS, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out" / f"{CORPUS}_cuts_bad.jsonl.gz").exists()
