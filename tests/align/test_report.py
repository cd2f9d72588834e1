import pytest
from lhotse.supervision import AlignmentItem as A

from asr_kd.align.report import AlignmentScorer, format_report


def test_perfect_alignment():
    scorer = AlignmentScorer()
    ref = [A("SIL", 0.0, 0.02), A("a", 0.02, 0.03), A("SIL", 0.05, 0.02)]
    scorer.add(["SIL"] * 2 + ["a"] * 3 + ["SIL"] * 2, ref)
    r = scorer.report()
    assert r["frame_agreement"] == 1.0 and r["num_boundaries"] == 2
    assert r["boundary_within_10ms"] == 1.0 and r["median_boundary_error_ms"] == pytest.approx(0.0, abs=1e-6)


def test_shifted_and_missing_boundaries_by_hand():
    # reference: SIL .00-.03 | a .03-.06 | b .06-.10 | SIL .10-.12  (12 frames)
    ref = [A("SIL", 0.0, 0.03), A("a", 0.03, 0.03), A("b", 0.06, 0.04), A("SIL", 0.10, 0.02)]
    # aligned: a starts 2 frames late (+20 ms), b on time, no final SIL
    aligned = ["SIL", "SIL", "SIL", "SIL", "SIL", "a", "b", "b", "b", "b", "b", "b"]
    scorer = AlignmentScorer()
    scorer.add(aligned, ref)
    r = scorer.report()
    # frames: ref SIL SIL SIL a a a b b b b SIL SIL; agree at 0,1,2, 5, 6,7,8,9 -> 8 / 12
    assert r["frame_agreement"] == pytest.approx(8 / 12)
    # boundaries: a (+20 ms), b (0 ms), final SIL unmatched (aligned has no final SIL) -> 3 boundaries
    assert r["num_boundaries"] == 3
    assert r["boundary_within_10ms"] == pytest.approx(1 / 3)
    assert r["boundary_within_20ms"] == pytest.approx(2 / 3)
    assert r["boundary_within_40ms"] == pytest.approx(2 / 3)
    worst = {w["phone"]: w for w in r["worst_phones"]}
    assert worst["a"]["agreement"] == pytest.approx(1 / 3) and worst["a"]["most_confused_with"] == "SIL"
    assert worst["SIL"]["agreement"] == pytest.approx(3 / 5) and worst["SIL"]["most_confused_with"] == "b"
    table = format_report(r)
    assert "66.67%" in table and "boundaries <= 20 ms 66.67%" in table


def test_reference_mapping_merges_repeats():
    # TIMIT-style closure + burst mapped to one phone
    ref = [A("bcl", 0.0, 0.02), A("b", 0.02, 0.02)]
    scorer = AlignmentScorer(ref_map=lambda s: "B" if s in ("bcl", "b") else s)
    scorer.add(["B"] * 4, ref)
    r = scorer.report()
    assert r["frame_agreement"] == 1.0 and r["num_boundaries"] == 0
