"""prepare_librispeech / download_librispeech on a miniature LibriSpeech built here."""

import logging
from pathlib import Path
from urllib.error import URLError

import pytest
from lhotse import load_manifest
from minicorpora import (
    LIBRISPEECH_EXPECTED,
    LIBRISPEECH_FAILED,
    LIBRISPEECH_OOV,
    LogRecords,
    build_mini_librispeech,
    tar_gz,
)

from asr_kd.data.g2p import ARPABET_PHONES
from asr_kd.data.lexicon import read_lexicon
from data_prep.common import CorpusError
from data_prep.librispeech import download_librispeech, prepare_librispeech, resolve_parts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_mini_librispeech(tmp_path_factory.mktemp("corpora"))


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("manifests")
    with LogRecords() as records:
        manifests = prepare_librispeech(corpus, output_dir, dataset_parts="mini_librispeech")
    return manifests, output_dir, records.records


def test_splits_counts_and_texts(prepared) -> None:
    manifests, _, _ = prepared
    assert sorted(manifests) == ["dev-clean-2", "train-clean-5"]
    for part, expected in LIBRISPEECH_EXPECTED.items():
        sups = manifests[part]["supervisions"]
        assert {s.id: s.text for s in sups} == expected
        assert [r.id for r in manifests[part]["recordings"]] == sorted(expected)
        for rec in manifests[part]["recordings"]:
            assert rec.sampling_rate == 16000 and Path(rec.sources[0].source).is_file()


def test_files_written(prepared) -> None:
    manifests, output_dir, _ = prepared
    for part in LIBRISPEECH_EXPECTED:
        for kind in ("recordings", "supervisions"):
            on_disk = load_manifest(output_dir / f"librispeech_{kind}_{part}.jsonl.gz")
            assert list(on_disk) == list(manifests[part][kind])
    assert not list(output_dir.glob(".tmp.*"))


def test_lexicon_and_oov(prepared) -> None:
    _, output_dir, _ = prepared
    lexicon = read_lexicon(output_dir / "librispeech_lexicon.txt")
    words = {w for texts in LIBRISPEECH_EXPECTED.values() for t in texts.values() for w in t.split()}
    assert set(lexicon) == words  # the kept utterances' words, nothing else
    assert lexicon["MISTER"] == [("M", "IH", "S", "T", "ER")]
    assert lexicon["THE"] == [("DH", "AH"), ("DH", "IY")]
    assert lexicon["CLASSES"] == [("K", "L", "AE", "S", "AH", "Z"), ("K", "L", "AE", "S", "IH", "Z")]
    for word in ("QUILTER'S", "NORTHANGER", "ZORBLAX"):  # G2P
        assert len(lexicon[word]) == 1 and set(lexicon[word][0]) <= ARPABET_PHONES
    oov_lines = (output_dir / "librispeech_oov.txt").read_text().splitlines()
    assert [line.split()[0] for line in oov_lines] == LIBRISPEECH_OOV
    assert [line for line in oov_lines if len(line.split()) == 1] == LIBRISPEECH_FAILED


def test_dropped_utterances_are_reported(prepared) -> None:
    _, _, records = prepared
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any("1272-128104-0002" in m and "empty transcript" in m for m in warnings)
    assert any("1462-170138-0000" in m and "empty transcript" in m for m in warnings)
    assert any("19-198-0002" in m and "ЖУК" in m for m in warnings)
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert any("4 out of dictionary" in m and "QUILTER'S" in m for m in infos)


def test_rerun_skips(prepared, corpus, caplog) -> None:
    manifests, output_dir, _ = prepared
    mtimes = {p: p.stat().st_mtime_ns for p in output_dir.glob("librispeech_*")}
    with caplog.at_level(logging.INFO):
        again = prepare_librispeech(corpus, output_dir, dataset_parts="mini_librispeech")
    assert "skipping preparation" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in output_dir.glob("librispeech_*")} == mtimes
    assert {k: list(v["supervisions"]) for k, v in again.items()} == {
        k: list(v["supervisions"]) for k, v in manifests.items()
    }


def test_one_part_and_parent_dir(corpus, tmp_path) -> None:
    manifests = prepare_librispeech(corpus.parent, tmp_path, dataset_parts=["dev-clean-2"])
    assert list(manifests) == ["dev-clean-2"]
    assert len(manifests["dev-clean-2"]["supervisions"]) == 2
    assert not (tmp_path / "librispeech_supervisions_train-clean-5.jsonl.gz").exists()


def test_resolve_parts(corpus) -> None:
    assert resolve_parts(corpus, "auto") == ["dev-clean-2", "train-clean-5"]
    assert resolve_parts(corpus, "mini_librispeech") == ["dev-clean-2", "train-clean-5"]
    with pytest.raises(CorpusError, match="none of"):
        resolve_parts(corpus, "librispeech")
    with pytest.raises(CorpusError, match="test-clean"):
        resolve_parts(corpus, ["dev-clean-2", "test-clean"])


def test_download_offline_file_url(corpus, tmp_path) -> None:
    server = tmp_path / "server"
    for part in ("dev-clean-2", "train-clean-5"):
        tar_gz(server / "31" / f"{part}.tar.gz", corpus / part, f"LibriSpeech/{part}")
    target = tmp_path / "download"
    got = download_librispeech(target, "mini_librispeech", base_url=f"file://{server}")
    assert got == target / "LibriSpeech"
    original = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file())
    copied = sorted(
        p.relative_to(got) for p in got.rglob("*") if p.is_file() and p.name != ".completed"
    )
    assert copied == original
    assert (got / "dev-clean-2" / ".completed").is_file()
    # a completed part is skipped, even with the archive gone from the server
    (server / "31" / "dev-clean-2.tar.gz").rename(tmp_path / "moved.tar.gz")
    download_librispeech(target, "dev-clean-2", base_url=f"file://{server}")
    # force re-downloads (and fails loudly when the archive is not there)
    with pytest.raises(URLError):
        download_librispeech(target, "dev-clean-2", force_download=True, base_url=f"file://{server}")
    (tmp_path / "moved.tar.gz").rename(server / "31" / "dev-clean-2.tar.gz")
    download_librispeech(target, "dev-clean-2", force_download=True, base_url=f"file://{server}")
    assert (got / "dev-clean-2" / ".completed").is_file()
    manifests = prepare_librispeech(got, tmp_path / "manifests")
    assert {k: len(v["supervisions"]) for k, v in manifests.items()} == {
        "dev-clean-2": 2,
        "train-clean-5": 2,
    }
    with pytest.raises(ValueError, match="unknown LibriSpeech part"):
        download_librispeech(target, "dev-clean-3")
