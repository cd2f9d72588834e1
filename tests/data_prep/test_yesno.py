"""prepare_yesno / download_yesno on a miniature yesno corpus (60 files, 8 kHz) built here."""

import logging
from pathlib import Path

import pytest
from lhotse import load_manifest
from minicorpora import YESNO_PATTERNS, build_mini_yesno, tar_gz

from asr_kd.data.lexicon import read_lexicon
from data_prep.common import CorpusError
from data_prep.yesno import download_yesno, prepare_yesno


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_mini_yesno(tmp_path_factory.mktemp("corpora"))


def _text(pattern: str) -> str:
    return " ".join("YES" if bit == "1" else "NO" for bit in pattern)


def test_prepare(corpus, tmp_path, caplog) -> None:
    manifests = prepare_yesno(corpus, tmp_path)
    ids = sorted("_".join(p) for p in YESNO_PATTERNS)
    expected = {"train": ids[::2], "test": ids[1::2]}  # lhotse: sorted names, alternating
    assert sorted(manifests) == ["test", "train"]
    for split, split_ids in expected.items():
        sups = manifests[split]["supervisions"]
        assert len(sups) == 30
        assert [s.id for s in sups] == split_ids
        assert all(s.text == _text(s.id.replace("_", "")) for s in sups)
        recs = manifests[split]["recordings"]
        assert all(r.sampling_rate == 8000 for r in recs)  # kept at 8 kHz
        assert list(load_manifest(tmp_path / f"yesno_recordings_{split}.jsonl.gz")) == list(recs)
    assert manifests["train"]["supervisions"][0].text == "NO NO NO NO NO NO NO NO"
    assert manifests["test"]["supervisions"]["0_0_0_0_0_1_0_0"].text == "NO NO NO NO NO YES NO NO"
    lexicon = read_lexicon(tmp_path / "yesno_lexicon.txt")
    assert lexicon == {"NO": [("N", "OW")], "YES": [("Y", "EH", "S")]}
    assert (tmp_path / "yesno_oov.txt").read_text() == ""
    with caplog.at_level(logging.INFO):
        prepare_yesno(corpus.parent, tmp_path)  # parent dir accepted; outputs exist: skipped
    assert "skipping preparation" in caplog.text


def test_wrong_file_count(corpus, tmp_path) -> None:
    partial = tmp_path / "waves_yesno"
    partial.mkdir()
    for path in sorted(corpus.glob("*.wav"))[:10]:
        (partial / path.name).symlink_to(path)
    with pytest.raises(CorpusError, match="exactly 60 .wav files, found 10"):
        prepare_yesno(partial, tmp_path / "out")
    (partial / "yes_no.wav").symlink_to(path)
    with pytest.raises(CorpusError, match="yes_no.wav"):
        prepare_yesno(partial, tmp_path / "out")


def test_download_offline_file_url(corpus, tmp_path) -> None:
    archive = tar_gz(tmp_path / "server" / "waves_yesno.tar.gz", corpus, "waves_yesno")
    got = download_yesno(tmp_path / "download", url=f"file://{archive}")
    assert got == tmp_path / "download" / "waves_yesno"
    assert len(list(got.glob("*.wav"))) == 60 and (got / ".completed").is_file()
    archive.unlink()
    assert download_yesno(tmp_path / "download", url=f"file://{archive}") == got  # skipped
    manifests = prepare_yesno(got, tmp_path / "manifests")
    assert len(manifests["train"]["supervisions"]) == 30
