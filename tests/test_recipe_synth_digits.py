"""Integration: stages 0-2 of recipes/synth_digits/run.sh on a tiny corpus."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, RecordingSet, SupervisionSet
from lhotse.qa import validate_recordings_and_supervisions

from asr_kd.data.lang import Lang
from asr_kd.data.lexicon import read_lexicon

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "dev", "test")


def run_recipe(data: Path, exp: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [str(REPO / "recipes/synth_digits/run.sh"), "--data", str(data), "--exp", str(exp), *args]
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    run_recipe(root / "data", root / "exp", "--hours", "0.03", "--seed", "5", "--nj", "2", "--stop-stage", "2")
    return root


def _manifests(data: Path, split: str):
    m = data / "manifests"
    return (
        RecordingSet.from_file(m / f"synth_digits_recordings_{split}.jsonl.gz"),
        SupervisionSet.from_file(m / f"synth_digits_supervisions_{split}.jsonl.gz"),
    )


def test_manifests_validate_and_match_audio(recipe):
    for split in SPLITS:
        recordings, supervisions = _manifests(recipe / "data", split)
        validate_recordings_and_supervisions(recordings, supervisions)
        for rec in recordings:
            info = sf.info(rec.sources[0].source)
            assert info.samplerate == rec.sampling_rate == 16000
            assert info.frames == rec.num_samples
            assert abs(info.duration - rec.duration) < 1e-9


def test_features_cover_the_audio(recipe):
    for split in SPLITS:
        cuts = CutSet.from_file(recipe / "data/fbank" / f"synth_digits_cuts_{split}.jsonl.gz")
        _, supervisions = _manifests(recipe / "data", split)
        assert len(cuts) == len(supervisions)
        for cut in cuts:
            feats = cut.load_features()
            assert feats.shape[1] == 80 and np.isfinite(feats).all()
            assert abs(feats.shape[0] - cut.duration / 0.01) <= 2


def test_phone_alignments_cover_each_utterance(recipe):
    lexicon = read_lexicon(recipe / "data/manifests/synth_digits_lexicon.txt")
    for split in SPLITS:
        _, supervisions = _manifests(recipe / "data", split)
        for sup in supervisions:
            phones = sup.alignment["phone"]
            assert phones[0].start == 0.0
            for a, b in zip(phones, phones[1:]):
                assert a.duration > 0 and abs(a.start + a.duration - b.start) < 1e-6
            assert abs(phones[-1].start + phones[-1].duration - sup.duration) < 1e-6
            words = [w.symbol for w in sup.alignment["word"]]
            assert words == sup.text.split()
            spoken = [p.symbol for p in phones if p.symbol != "SIL"]
            assert len(spoken) >= sum(min(len(p) for p in lexicon[w]) for w in words) - len(words)


def test_voices_disjoint_across_splits(recipe):
    variants = {}
    for split in SPLITS:
        _, supervisions = _manifests(recipe / "data", split)
        variants[split] = {s.custom["variant"] for s in supervisions}
        assert len(variants[split]) > 1
    assert not variants["train"] & variants["dev"]
    assert not variants["train"] & variants["test"]
    assert not variants["dev"] & variants["test"]


def test_lang_matches_lexicon(recipe):
    lang = Lang.load(recipe / "data/lang")
    lexicon = read_lexicon(recipe / "data/manifests/synth_digits_lexicon.txt")
    phones = {p for prons in lexicon.values() for pron in prons for p in pron}
    assert set(lang.nonsilence_phones) == phones
    assert lang.num_pdfs == 3 * len(phones) + 3 * len(lang.silence_phones)


def _digest(data: Path) -> str:
    h = hashlib.sha256()
    for split in SPLITS:
        _, supervisions = _manifests(data, split)
        for sup in supervisions:
            h.update(repr(sup.to_dict()).encode())
    for wav in sorted((data / "manifests/wav").rglob("*.wav")):
        h.update(wav.read_bytes())
    return h.hexdigest()


def test_same_seed_same_corpus(recipe, tmp_path):
    run_recipe(tmp_path / "data", tmp_path / "exp", "--hours", "0.03", "--seed", "5", "--nj", "1", "--stop-stage", "0")
    assert _digest(tmp_path / "data") == _digest(recipe / "data")
    run_recipe(tmp_path / "data2", tmp_path / "exp", "--hours", "0.03", "--seed", "6", "--nj", "1", "--stop-stage", "0")
    assert _digest(tmp_path / "data2") != _digest(recipe / "data")


def test_rerun_skips_finished_stages(recipe):
    outputs = [
        recipe / "data/manifests/synth_digits_supervisions_train.jsonl.gz",
        recipe / "data/fbank/synth_digits_cuts_train.jsonl.gz",
        recipe / "data/lang/lang.json",
    ]
    before = [p.stat().st_mtime_ns for p in outputs]
    out = run_recipe(recipe / "data", recipe / "exp", "--hours", "0.03", "--seed", "5", "--stop-stage", "2")
    assert "Stage 2" in out and "Done" in out
    assert [p.stat().st_mtime_ns for p in outputs] == before
    assert (recipe / "exp/corpus_stats.json").is_file()
