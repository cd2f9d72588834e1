import numpy as np
import pytest
from lhotse.supervision import AlignmentItem
from lhotse.utils import compute_num_frames

from asr_kd.align.frames import (
    frame_to_seconds,
    num_frames,
    seconds_to_frame,
    seconds_to_samples,
    segments,
    tier_to_frame_symbols,
)


@pytest.mark.parametrize("num_samples", [0, 79, 80, 159, 160, 161, 239, 240, 16000, 16079, 16080])
def test_num_frames_matches_lhotse(num_samples):
    assert num_frames(num_samples, 16000) == compute_num_frames(num_samples / 16000, 0.01, 16000)


def test_num_frames_matches_fbank():
    from lhotse import Fbank

    for n in (1234, 16080, 16081):
        feats = Fbank().extract(np.random.default_rng(0).standard_normal(n).astype(np.float32), 16000)
        assert feats.shape[0] == num_frames(n, 16000)


def test_conversions_at_the_edges():
    assert seconds_to_frame(0.0) == 0
    assert seconds_to_frame(0.0099999) == 0
    assert seconds_to_frame(0.01) == 1  # a boundary belongs to the frame it starts
    assert seconds_to_frame(0.03) == 3  # 0.03 / 0.01 = 2.9999999999999996 in floating point
    assert frame_to_seconds(3) == pytest.approx(0.03)
    assert seconds_to_samples(0.0125, 16000) == 200
    assert seconds_to_samples(1.0 - 1 / 32000, 16000) == 16000


def test_tier_to_frame_symbols_uses_frame_centres():
    # SIL [0, 0.012), a [0.012, 0.027), b [0.027, 0.05): frame centres 0.005, 0.015, 0.025, 0.035, 0.045
    tier = [AlignmentItem("SIL", 0.0, 0.012), AlignmentItem("a", 0.012, 0.015), AlignmentItem("b", 0.027, 0.023)]
    assert tier_to_frame_symbols(tier, 5) == ["SIL", "a", "a", "b", "b"]
    # one frame past the audio (num_frames rounds up): takes the last segment
    assert tier_to_frame_symbols(tier, 6)[-1] == "b"
    # offset: the tier is in recording time, the cut starts at 0.01
    assert tier_to_frame_symbols(tier, 4, offset=0.01) == ["a", "a", "b", "b"]
    with pytest.raises(ValueError):
        tier_to_frame_symbols([], 3)


def test_segments():
    assert segments([]) == []
    assert segments([4, 4, 7, 7, 7, 4]) == [(4, 0, 2), (7, 2, 3), (4, 5, 1)]
