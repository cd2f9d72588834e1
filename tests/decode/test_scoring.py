"""Tests of WER scoring and the icefall-style result files (asr_kd.decode.scoring)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asr_kd.decode.scoring import compute_wer, read_utt_errors, write_results

RESULTS = {
    "u1": ("the cat sat", "the cat sat"),            # 3 hits
    "u2": ("one two three", "one too three four"),   # 2 hits, 1 sub, 1 ins
    "u3": ("a b c d", "a d"),                        # 2 hits, 2 del
    "u4": ("x y", ""),                               # 2 del
    "u5": ("", "noise"),                             # 1 ins (empty reference)
}


def test_counts() -> None:
    stats = compute_wer(RESULTS)
    assert (stats.hits, stats.sub, stats.ins, stats.dels) == (7, 1, 2, 4)
    assert (stats.num_ref_words, stats.num_utts, stats.errors) == (12, 5, 7)
    assert stats.wer == pytest.approx(7 / 12)
    assert stats.alignments["u2"] == [("one", "one"), ("two", "too"), ("three", "three"), (None, "four")]
    assert stats.alignments["u3"] == [("a", "a"), ("b", None), ("c", None), ("d", "d")]
    summary = stats.summary()
    assert (summary["sub"], summary["ins"], summary["del"], summary["num_ref_words"]) == (1, 2, 4, 12)


def test_perfect_and_empty() -> None:
    assert compute_wer({"a": ("x y", "x y")}).wer == 0.0
    assert compute_wer({}).wer == 0.0
    assert compute_wer({"a": ("", "z")}).wer == float("inf")


def test_files(tmp_path: Path) -> None:
    stats = write_results(tmp_path, "hybrid-beam13", RESULTS)
    assert stats.errors == 7
    recogs = (tmp_path / "recogs-hybrid-beam13.txt").read_text().splitlines()
    assert recogs[2:4] == ["u2:\tref=['one', 'two', 'three']", "u2:\thyp=['one', 'too', 'three', 'four']"]
    errs = (tmp_path / "errs-hybrid-beam13.txt").read_text()
    assert errs.startswith("%WER 58.33 [ 7 / 12, 2 ins, 4 del, 1 sub ]\n")
    assert "u2:\tone (two->too) three (*->four)\n" in errs and "u4:\t(x->*) (y->*)\n" in errs
    assert "TOTALS: 5 utterances, 12 reference words, 7 correct, 1 sub, 2 ins, 4 del" in errs
    summary = (tmp_path / "wer-summary-hybrid-beam13.txt").read_text()
    assert summary == "settings\tWER\nhybrid-beam13\t58.33\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "errs-hybrid-beam13.txt", "recogs-hybrid-beam13.txt", "utt-errors-hybrid-beam13.tsv",
        "wer-summary-hybrid-beam13.txt"]
    lines = (tmp_path / "utt-errors-hybrid-beam13.tsv").read_text().splitlines()
    assert lines[0] == "utt_id\tref_words\terrors\tsub\tins\tdel"
    assert lines[2] == "u2\t3\t2\t1\t1\t0" and lines[5] == "u5\t0\t1\t0\t1\t0"
    per_utt = read_utt_errors(tmp_path / "utt-errors-hybrid-beam13.tsv")
    assert per_utt == {"u1": (3, 0), "u2": (3, 2), "u3": (4, 2), "u4": (2, 2), "u5": (0, 1)}
    assert sum(e for _, e in per_utt.values()) == stats.errors


def test_malformed_utt_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "utt-errors-x.tsv"
    path.write_text("utt_id\tref_words\terrors\tsub\tins\tdel\nu1\t3\t2\t1\t0\t0\n")
    with pytest.raises(ValueError, match=r"utt-errors-x\.tsv:2: counts must be >= 0 with errors = sub"):
        read_utt_errors(path)
    path.write_text("u1 3 2\n")
    with pytest.raises(ValueError, match="expected the header line"):
        read_utt_errors(path)
