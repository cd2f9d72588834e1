"""Fault injection on the features stage: a second writer, damaged archives, output I/O errors (a failing
writer, a file-size limit), the skipped-share threshold, and bad audio whose skip reason must say what is
wrong with the file."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, LilcomChunkyWriter, Recording, RecordingSet, SupervisionSet
from lhotse.utils import fastcopy
from test_features import CORPUS, GOOD_IDS, _sup, _tone, _wav, build_corpus

from asr_kd.data.features import compute_fbank
from asr_kd.guard import OutputIOError, StageError, TooManySkippedError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("features-faults"))


def _fbank(manifests: Path, out: Path, **kw) -> dict:
    return compute_fbank(manifests, CORPUS, out, device="cpu", max_skipped_share=1.0, _cuts_per_shard=2, **kw)


def _unfinished(out: Path, split: str) -> bool:
    return (
        not (out / f"{CORPUS}_cuts_{split}.jsonl.gz").exists()
        and not (out / f"{CORPUS}_cuts_{split}.done.json").exists()
    )


def test_second_writer_is_refused_and_lock_dies_with_its_holder(manifests, tmp_path, lock_holder):
    out = tmp_path / "fbank"
    holder = lock_holder(out, "features")
    message = rf"{out} is being written by another `asr-kd features` run \(pid {holder.pid}"
    with pytest.raises(StageError, match=message):
        _fbank(manifests, out, splits=["dev"])
    assert _unfinished(out, "dev")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert _fbank(manifests, out, splits=["dev"])["dev"]["num_cuts"] == 1


def test_damaged_archive_is_recomputed_not_skipped(manifests, tmp_path):
    out = tmp_path / "fbank"
    _fbank(manifests, out, splits=["train"])
    done = json.loads((out / f"{CORPUS}_cuts_train.done.json").read_text())
    assert done["num_cuts"] == 4 and sorted(done["files"]) == [
        f"{CORPUS}_cuts_train.jsonl.gz", f"{CORPUS}_feats_train/feats-00000.lca",
        f"{CORPUS}_feats_train/feats-00001.lca", f"{CORPUS}_skipped_train.txt",
    ]  # fmt: skip
    archive = out / f"{CORPUS}_feats_train" / "feats-00001.lca"
    intact = archive.read_bytes()
    archive.write_bytes(intact[: len(intact) // 2])  # what a killed concurrent writer left
    stats = _fbank(manifests, out, splits=["train"])
    assert "already_done" not in stats["train"] and stats["train"]["num_cuts"] == 4
    assert archive.read_bytes() == intact
    cuts = CutSet.from_file(out / f"{CORPUS}_cuts_train.jsonl.gz")
    assert [c.id for c in cuts] == GOOD_IDS and all(c.load_features().shape[0] == c.num_frames for c in cuts)
    assert _fbank(manifests, out, splits=["train"])["train"] == {"already_done": True, "num_cuts": 4}
    # a manifest without its record (a run killed between the two, or an older version) is redone too
    (out / f"{CORPUS}_cuts_train.done.json").unlink()
    assert "already_done" not in _fbank(manifests, out, splits=["train"])["train"]


def test_full_disk_stops_the_stage_and_a_rerun_resumes(manifests, tmp_path, monkeypatch):
    out = tmp_path / "fbank"
    write = LilcomChunkyWriter.write
    calls = []

    def write_until_disk_is_full(self, key, value):
        calls.append(key)
        if len(calls) > 2:
            raise OSError(28, "No space left on device")
        return write(self, key, value)

    monkeypatch.setattr(LilcomChunkyWriter, "write", write_until_disk_is_full)
    with pytest.raises(OutputIOError, match=r"cannot write .*feats-00001.lca: No space left on device") as info:
        _fbank(manifests, out, splits=["train"])
    assert info.value.errno == 28
    assert len(calls) == 3  # stopped at the first failure, not logged per utterance and carried on
    assert _unfinished(out, "train") and not (out / f"{CORPUS}_skipped_train.txt").exists()
    monkeypatch.undo()
    stats = _fbank(manifests, out, splits=["train"])
    assert stats["train"]["num_cuts"] == 4 and "extraction_failed" not in stats["train"]["skipped_by_reason"]
    assert not [p for p in out.rglob(".tmp.*")]


@pytest.mark.slow
def test_file_size_limit_fails_the_cli_and_a_rerun_resumes(manifests, tmp_path):
    out = tmp_path / "fbank"
    cmd = [sys.executable, "-m", "asr_kd.cli", "features", "--manifest-dir", str(manifests), "--corpus", CORPUS,
           "--output-dir", str(out), "--splits", "train", "--device", "cpu", "--max-skipped-share", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def limit_file_size():  # in the child: no file it writes may exceed 4000 bytes (an archive needs more)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))

    limited = subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300)
    assert limited.returncode == 1, limited.stderr
    assert "File too large (errno 27)" in limited.stderr and "feats-00000.lca" in limited.stderr, limited.stderr[-600:]
    assert "extraction_failed" not in limited.stderr
    assert _unfinished(out, "train")
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert [c.id for c in CutSet.from_file(out / f"{CORPUS}_cuts_train.jsonl.gz")] == GOOD_IDS


def test_split_above_the_skipped_share_fails(manifests, tmp_path):
    out = tmp_path / "fbank"
    with pytest.raises(TooManySkippedError, match=r"split 'train' .*: 7 of 11 skipped \(63.6%\), more than"):
        compute_fbank(manifests, CORPUS, out, splits=["train"], device="cpu", max_skipped_share=0.6)
    assert _unfinished(out, "train")
    assert len((out / f"{CORPUS}_skipped_train.txt").read_text().splitlines()) == 7  # kept for the user
    stats = compute_fbank(manifests, CORPUS, out, splits=["train"], device="cpu", max_skipped_share=7 / 11)
    assert stats["train"]["num_cuts"] == 4  # exactly at the threshold: passes


def test_bad_audio_is_skipped_with_what_is_wrong_with_the_file(tmp_path):
    audio, manifests = tmp_path / "audio", tmp_path / "manifests"
    audio.mkdir()
    manifests.mkdir()
    good = Recording.from_file(_wav(audio, "good", _tone(1.0, 16000), 16000))
    short = Recording.from_file(_wav(audio, "short", _tone(1.0, 16000), 16000))
    Path(short.sources[0].source).write_bytes(Path(short.sources[0].source).read_bytes()[:100])
    rate = Recording.from_file(_wav(audio, "rate", _tone(1.0, 16000), 16000))
    rate = fastcopy(rate, sampling_rate=8000, num_samples=8000)  # the manifest claims 8 kHz, 1 s
    nan = _tone(1.0, 16000)
    nan[4000:4010] = np.nan
    sf.write(audio / "nan.wav", nan, 16000, subtype="FLOAT")
    nan_rec = Recording.from_file(audio / "nan.wav")
    RecordingSet.from_recordings([good, short, rate, nan_rec]).to_file(manifests / f"{CORPUS}_recordings_x.jsonl.gz")
    sups = [_sup(f"{r}-1", r, 0.0, 1.0) for r in ("good", "short", "rate", "nan")]
    SupervisionSet.from_segments(sups).to_file(manifests / f"{CORPUS}_supervisions_x.jsonl.gz")
    out = tmp_path / "fbank"
    stats = compute_fbank(manifests, CORPUS, out, device="cpu", max_skipped_share=1.0)["x"]
    assert stats["num_cuts"] == 1
    lines = (out / f"{CORPUS}_skipped_x.txt").read_text().splitlines()
    skipped = {line.split("\t")[0]: (line.split("\t")[1], line.split("\t")[3]) for line in lines}
    assert skipped["short-1"][0] == "truncated_audio"
    assert "holds 28 samples (0.002 s) but the manifest says 16000 (1.000 s)" in skipped["short-1"][1]
    assert skipped["rate-1"] == (
        "sampling_rate_mismatch",
        f"{audio}/rate.wav: the file is 16000 Hz but the "
        "recordings manifest says 8000 Hz (a stale or wrong manifest: prepare it again)",
    )
    assert skipped["nan-1"] == ("non_finite_audio", f"{audio}/nan.wav: non-finite samples: 10 of 16000 are NaN or "
                                "infinite")  # fmt: skip
    assert not any("report this issue" in line or "convert float NaN" in line for line in lines)
