"""The align stage's guards on a tiny synthetic corpus: a stale aligner or alignment is rebuilt, not reused;
non-finite features are skipped by cut id and counted; the skipped-share threshold; output I/O errors;
the lock and a killed run's temporaries."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet, Features, MonoCut, NumpyHdf5Writer, SupervisionSegment
from lhotse.features.io import close_cached_file_handles

from asr_kd.align.stage import align_corpus
from asr_kd.align.train_mono import MonoConfig
from asr_kd.data.lang import prepare_lang
from asr_kd.guard import OutputIOError, StageError, TooManySkippedError
from asr_kd.hmm.system import StaleSystemError

CORPUS = "toy"
WORDS = {"A": "a", "B": "b", "C": "c"}
CFG = MonoConfig(num_iters=2, realign_iters=(1,), total_gauss=12, max_utts=100)
NAN_CUT = "train-0005"


def _write_cuts(cuts_dir: Path, split: str, num_cuts: int, seed: int, nan_cut: str | None = None) -> None:
    """Cuts whose fbank frames are phone-dependent means + noise, with their word transcripts."""
    rng = np.random.default_rng(seed)
    means = {p: np.random.default_rng(i).normal(0, 3, 80) for i, p in enumerate(("sil", *WORDS.values()))}
    cuts = []
    with NumpyHdf5Writer(cuts_dir / f"{CORPUS}_feats_{split}.h5") as writer:
        for i in range(num_cuts):
            cut_id = f"{split}-{i:04d}"
            words = [str(w) for w in rng.choice(list(WORDS), size=int(rng.integers(1, 4)))]
            segments = ["sil", *(WORDS[w] for w in words), "sil"]
            feats = np.concatenate([means[p] + rng.normal(0, 1, (int(rng.integers(8, 16)), 80)) for p in segments])
            feats = feats.astype(np.float32)
            if cut_id == nan_cut:
                feats[3, 7] = np.nan
            num_frames = feats.shape[0]
            features = Features(
                type="fbank", num_frames=num_frames, num_features=80, frame_shift=0.01, sampling_rate=16000,
                start=0.0, duration=num_frames * 0.01, storage_type=writer.name,
                storage_path=str(writer.storage_path), storage_key=writer.write(cut_id, feats),
            )  # fmt: skip
            sup = SupervisionSegment(cut_id, cut_id, 0.0, num_frames * 0.01, text=" ".join(words))
            cuts.append(MonoCut(cut_id, 0.0, num_frames * 0.01, 0, features=features, supervisions=[sup]))
    CutSet.from_cuts(cuts).to_file(cuts_dir / f"{CORPUS}_cuts_{split}.jsonl.gz")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("align-guards")
    (root / "fbank").mkdir()
    _write_cuts(root / "fbank", "train", 12, 0, nan_cut=NAN_CUT)
    _write_cuts(root / "fbank", "dev", 4, 1)
    (root / "lexicon.txt").write_text("".join(f"{w} {p}\n" for w, p in WORDS.items()))
    prepare_lang(root / "lexicon.txt", root / "lang", num_states=1, num_sil_states=1)
    prepare_lang(root / "lexicon.txt", root / "lang3", num_states=3, num_sil_states=1)
    return root


def _align(root: Path, out: Path, lang: str = "lang", **kw) -> dict:
    kw.setdefault("max_skipped_share", 0.1)
    return align_corpus(
        root / "fbank", CORPUS, root / lang, out / "ali", out / "exp", splits=("train", "dev"), device="cpu",
        config=CFG, **kw,
    )  # fmt: skip


def _labels(out: Path, split: str) -> dict[str, list[int]]:
    close_cached_file_handles()  # lhotse keeps HDF5 files open by path: a rewritten archive is a new file
    return {c.id: c.load_frame_labels().tolist() for c in CutSet.from_file(out / f"ali/{CORPUS}_cuts_{split}.jsonl.gz")}


def test_non_finite_features_are_skipped_by_id_and_counted(corpus, tmp_path):
    _align(corpus, tmp_path)
    skipped = (tmp_path / "exp/skipped_train.txt").read_text().splitlines()
    assert skipped == [f"{NAN_CUT}\tnon_finite_features: 1 of {_num_values(corpus, NAN_CUT)} fbank values are NaN "
                       "or infinite"]  # fmt: skip
    labels = _labels(tmp_path, "train")
    assert len(labels) == 11 and NAN_CUT not in labels
    assert (tmp_path / "exp/skipped_dev.txt").read_text() == ""


def _num_values(root: Path, cut_id: str) -> int:
    cut = next(c for c in CutSet.from_file(root / f"fbank/{CORPUS}_cuts_train.jsonl.gz") if c.id == cut_id)
    return cut.num_frames * 80


def test_split_above_the_skipped_share_fails_before_its_manifest(corpus, tmp_path):
    with pytest.raises(TooManySkippedError, match=r"alignment of toy split 'train' .*: 1 of 12 skipped \(8.3%\)"):
        _align(corpus, tmp_path, max_skipped_share=0.05)
    assert not (tmp_path / f"ali/{CORPUS}_cuts_train.jsonl.gz").exists()
    assert (tmp_path / "exp/skipped_train.txt").read_text().startswith(NAN_CUT)


def test_stale_aligner_is_refused_and_stale_alignments_realigned(corpus, tmp_path, caplog):
    _align(corpus, tmp_path)
    assert torch.load(tmp_path / "exp/final.gmm.pt")["num_pdfs"] == 1 * 3 + 1 * 2
    with caplog.at_level(logging.INFO):
        _align(corpus, tmp_path)  # same inputs: everything reused
    assert "reusing the trained aligner" in caplog.text and "train already aligned" in caplog.text
    # a lang with 3 states per phone (11 pdfs): the 5-pdf aligner is refused, not used
    with pytest.raises(StaleSystemError, match=r"final.gmm.pt was built for another lang"):
        _align(corpus, tmp_path, lang="lang3")
    # another aligner in place (here: retrained for lang3 in another exp dir and copied over): the splits
    # it did not align are realigned, not reused
    other = tmp_path / "other"
    _align(corpus, other, lang="lang3")
    (tmp_path / "exp/final.gmm.pt").write_bytes((other / "exp/final.gmm.pt").read_bytes())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _align(corpus, tmp_path, lang="lang3")
    assert "realigning train" in caplog.text and "realigning dev" in caplog.text
    assert "gmm_sha256: built for" in caplog.text
    assert _labels(tmp_path, "train") == _labels(other, "train")
    assert max(max(v) for v in _labels(tmp_path, "train").values()) > 4  # pdf ids of the new lang


def test_damaged_labels_archive_is_realigned(corpus, tmp_path, caplog):
    _align(corpus, tmp_path)
    before = _labels(tmp_path, "dev")
    h5 = tmp_path / f"ali/{CORPUS}_frame_labels_dev.h5"
    h5.write_bytes(h5.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        _align(corpus, tmp_path)
    assert "realigning dev" in caplog.text and "realigning train" not in caplog.text
    assert _labels(tmp_path, "dev") == before


def test_full_disk_stops_align_and_a_rerun_resumes(corpus, tmp_path, monkeypatch):
    store = NumpyHdf5Writer.store_array
    calls = []

    def store_until_disk_is_full(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) > 3:
            raise OSError(28, "No space left on device")
        return store(self, *args, **kwargs)

    monkeypatch.setattr(NumpyHdf5Writer, "store_array", store_until_disk_is_full)
    with pytest.raises(OutputIOError, match=r"cannot write .*toy_frame_labels_train.h5: No space left on device"):
        _align(corpus, tmp_path)
    assert len(calls) == 4
    assert not (tmp_path / f"ali/{CORPUS}_cuts_train.jsonl.gz").exists()
    assert not list((tmp_path / "ali").glob(".tmp.*"))  # the half-written archive is gone
    monkeypatch.undo()
    _align(corpus, tmp_path)
    assert len(_labels(tmp_path, "train")) == 11


def test_second_writer_refused_and_killed_runs_temporaries_removed(corpus, tmp_path, lock_holder):
    holder = lock_holder(tmp_path / "ali", "align")
    with pytest.raises(StageError, match=r"another `asr-kd align` run \(pid"):
        _align(corpus, tmp_path)
    holder.kill()
    holder.wait()
    # what `kill` during stage 3 leaves behind
    left = [tmp_path / f"ali/.tmp.{holder.pid}.{CORPUS}_frame_labels_train.h5",
            tmp_path / f"exp/.tmp.{holder.pid}.final.gmm.pt"]  # fmt: skip
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    _align(corpus, tmp_path)
    assert not any(path.exists() for path in left)
    assert json.loads((tmp_path / "exp/config.json").read_text())["corpus"] == CORPUS


@pytest.mark.slow
def test_kill_during_alignment_leaves_temporaries_that_the_rerun_removes(corpus, tmp_path):
    """A child process is SIGKILLed right after writing its first frame labels into the .tmp archive."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from lhotse import NumpyHdf5Writer
        store = NumpyHdf5Writer.store_array
        def store_then_die(self, *args, **kwargs):
            store(self, *args, **kwargs)
            self.hdf.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        NumpyHdf5Writer.store_array = store_then_die
        from asr_kd.align.stage import align_corpus
        from asr_kd.align.train_mono import MonoConfig
        align_corpus({str(corpus / "fbank")!r}, {CORPUS!r}, {str(corpus / "lang")!r}, {str(tmp_path / "ali")!r},
                     {str(tmp_path / "exp")!r}, splits=("train", "dev"), device="cpu", max_skipped_share=0.1,
                     config=MonoConfig(num_iters=2, realign_iters=(1,), total_gauss=12, max_utts=100))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    left = list((tmp_path / "ali").glob(f".tmp.*.{CORPUS}_frame_labels_train.h5"))
    assert len(left) == 1 and (tmp_path / "exp/final.gmm.pt").is_file()
    assert not (tmp_path / f"ali/{CORPUS}_cuts_train.jsonl.gz").exists()
    _align(corpus, tmp_path)
    assert not list((tmp_path / "ali").glob(".tmp.*"))
    reference = tmp_path / "uninterrupted"
    _align(corpus, reference)
    assert _labels(tmp_path, "train") == _labels(reference, "train")
