"""Integration: stages 0-3 of recipes/librispeech/run.sh on a miniature mini-LibriSpeech."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from lhotse import CutSet
from minicorpora import LIBRISPEECH_EXPECTED, build_mini_librispeech

from asr_kd.data.g2p import ARPABET_PHONES
from asr_kd.data.lang import Lang

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_librispeech_recipe_stages_0_3(tmp_path):
    build_mini_librispeech(tmp_path / "download")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [
        str(REPO / "recipes/librispeech/run.sh"), "--dl-dir", str(tmp_path / "download"),
        "--download", "false", "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
        "--stop-stage", "3",
        "--max-skipped-share", "1",  # an aligner trained on 2 utterances skips half of them (see below)
    ]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    for part, expected in LIBRISPEECH_EXPECTED.items():
        cuts = CutSet.from_file(tmp_path / f"data/fbank/librispeech_cuts_{part}.jsonl.gz")
        assert {c.supervisions[0].id: c.supervisions[0].text for c in cuts} == expected
        for cut in cuts:
            assert cut.load_features().shape == (cut.num_frames, 80)
            assert abs(cut.num_frames - cut.duration * 100) <= 2
    lang = Lang.load(tmp_path / "data/lang_librispeech")
    assert set(lang.nonsilence_phones) <= set(ARPABET_PHONES)
    assert {"MISTER", "ZORBLAX", "NORTHANGER"} <= set(lang.words)
    assert (tmp_path / "exp/corpus_stats.json").is_file()
    # stage 3: every cut is aligned frame by frame or listed with its reason (an aligner trained on
    # two utterances cannot align everything; nothing may vanish silently)
    for part in LIBRISPEECH_EXPECTED:
        aligned = list(CutSet.from_file(tmp_path / f"data/ali/librispeech_cuts_{part}.jsonl.gz") or [])
        skipped = (tmp_path / f"exp/align/skipped_{part}.txt").read_text().splitlines()
        assert len(aligned) + len(skipped) == len(LIBRISPEECH_EXPECTED[part])
        assert all("\t" in line for line in skipped)
        for cut in aligned:
            assert cut.load_frame_labels().shape == (cut.num_frames,)
    assert not (tmp_path / "exp/align/report.json").exists()  # LibriSpeech has no reference phones
