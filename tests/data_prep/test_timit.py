"""prepare_timit on a miniature TIMIT built here (lhotse's layout and the LDC layout)."""

import logging
import shutil
from pathlib import Path

import pytest
from lhotse import load_manifest
from minicorpora import TIMIT_EXPECTED, LogRecords, build_mini_timit, zip_dir

from asr_kd.data.g2p import ARPABET_PHONES
from asr_kd.data.lexicon import read_lexicon
from data_prep.common import CorpusError
from data_prep.timit import (
    TIMIT_TO_ARPABET,
    download_timit,
    find_timit_dictionary,
    prepare_timit,
    read_timit_dictionary,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_mini_timit(tmp_path_factory.mktemp("corpora"), layout="lhotse")


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("manifests")
    with LogRecords() as logs:
        manifests = prepare_timit(corpus, output_dir)
    return manifests, output_dir, logs


def _utt_path(corpus: Path, sup_id: str, suffix: str) -> Path:
    speaker, utt = sup_id.split("-")
    (path,) = (corpus / "data").glob(f"*/*/{speaker}/{utt}.{suffix}")
    return path


def test_splits_counts_and_texts(prepared) -> None:
    manifests, output_dir, _ = prepared
    assert sorted(manifests) == ["DEV", "TEST", "TRAIN"]
    for split, expected in TIMIT_EXPECTED.items():
        assert {s.id: s.text for s in manifests[split]["supervisions"]} == expected
        assert [r.id for r in manifests[split]["recordings"]] == sorted(expected)
        assert all(r.sampling_rate == 16000 for r in manifests[split]["recordings"])
        on_disk = load_manifest(output_dir / f"timit_supervisions_{split}.jsonl.gz")
        assert list(on_disk) == list(manifests[split]["supervisions"])
    assert manifests["TRAIN"]["supervisions"]["FCJF0-SX127"].speaker == "FCJF0"


def test_phone_tier_matches_phn_files(prepared, corpus) -> None:
    manifests, _, _ = prepared
    checked = 0
    for split in manifests:
        for sup in manifests[split]["supervisions"]:
            phn = [line.split() for line in _utt_path(corpus, sup.id, "PHN").read_text().splitlines()]
            tier = sup.alignment["phone"]
            assert [item.symbol for item in tier] == [sym for _, _, sym in phn]
            assert [item.start for item in tier] == [int(s) / 16000 for s, _, _ in phn]
            assert [round(item.end * 16000) for item in tier] == [int(e) for _, e, _ in phn]
            assert tier[0].symbol == "h#" and tier[0].start == 0.0
            words = [line.split() for line in _utt_path(corpus, sup.id, "WRD").read_text().splitlines()]
            assert [item.symbol for item in sup.alignment["word"]] == [w for _, _, w in words]
            assert len(words) == len(sup.text.split())
            checked += 1
    assert checked == 4


def test_lexicon_from_timitdic_cmudict_and_g2p(prepared) -> None:
    _, output_dir, logs = prepared
    lexicon = read_lexicon(output_dir / "timit_lexicon.txt")
    words = {w for texts in TIMIT_EXPECTED.values() for t in texts.values() for w in t.split()}
    assert set(lexicon) == words
    assert lexicon["THE"] == [("DH", "AH"), ("DH", "IY")]  # "the" and "the~", TIMIT order
    assert lexicon["AN"] == [("AE", "N"), ("AH", "N")]
    assert lexicon["DON'T"] == [("D", "OW", "N", "T")]  # TIMITDIC wins over CMUdict's two
    assert lexicon["OILY"] == [("OY", "L", "IY")]
    assert lexicon["LINED"] == [("L", "AY", "N", "D")]  # not in TIMITDIC: CMUdict
    (zorblax,) = lexicon["ZORBLAX"]  # in neither: G2P
    assert set(zorblax) <= ARPABET_PHONES
    assert (output_dir / "timit_oov.txt").read_text().split()[0] == "ZORBLAX"
    assert len((output_dir / "timit_oov.txt").read_text().splitlines()) == 1
    warnings = logs.messages(logging.WARNING)
    assert any("MKLS0-SI1437" in m and "empty transcript" in m for m in warnings)
    assert any("TIMITDIC.TXT:24" in m for m in warnings)  # the broken dictionary line


def test_read_timit_dictionary(corpus) -> None:
    path = find_timit_dictionary(corpus)
    assert path == corpus / "DOC" / "TIMITDIC.TXT"
    lexicon = read_timit_dictionary(path)
    assert lexicon["BOTTLE"] == [("B", "AA", "T", "AH", "L")]  # syllabic el
    assert lexicon["TO"] == [("T", "UW")]
    assert len(lexicon) == 19  # 21 entries, "an~" and "the~" merged into AN and THE
    assert {p for phones in TIMIT_TO_ARPABET.values() for p in phones} <= ARPABET_PHONES
    assert len(TIMIT_TO_ARPABET) == 61


def test_ldc_layout_and_no_dictionary(tmp_path) -> None:
    corpus = build_mini_timit(tmp_path / "corpora", layout="ldc")
    shutil.rmtree(corpus / "DOC")
    manifests = prepare_timit(corpus, tmp_path / "manifests")
    assert {k: len(v["supervisions"]) for k, v in manifests.items()} == {
        "TRAIN": 2,
        "DEV": 1,
        "TEST": 1,
    }
    rec = manifests["DEV"]["recordings"]["FADG0-SI1279"]
    assert rec.sources[0].source == str(corpus / "TEST" / "DR4" / "FADG0" / "SI1279.WAV")
    assert rec.load_audio().shape == (1, rec.num_samples)
    lexicon = read_lexicon(tmp_path / "manifests" / "timit_lexicon.txt")
    assert lexicon["DON'T"] == [("D", "OW", "N", "T"), ("D", "OW", "N")]  # CMUdict now
    assert "GREG" in lexicon


def test_keep_sa_and_bad_layout(corpus, tmp_path) -> None:
    manifests = prepare_timit(corpus, tmp_path / "with_sa", drop_sa=False)
    assert "FCJF0-SA1" in manifests["TRAIN"]["supervisions"]
    assert len(manifests["TRAIN"]["supervisions"]) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="data/TRAIN"):
        prepare_timit(tmp_path / "empty", tmp_path / "out")


def test_download_offline_file_url(corpus, tmp_path) -> None:
    archive = zip_dir(tmp_path / "server" / "timit.zip", corpus)
    got = download_timit(tmp_path / "download", url=f"file://{archive}")
    assert got == tmp_path / "download" / "timit"
    assert (got / "data" / "TRAIN" / "DR1" / "FCJF0" / "SX127.PHN").is_file()
    manifests = prepare_timit(got, tmp_path / "manifests")
    assert len(manifests["TRAIN"]["supervisions"]) == 2
