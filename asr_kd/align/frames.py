"""Frames, seconds and samples: the conventions every alignment in asr-kd follows.

Features are lhotse ``Fbank`` with ``snip_edges=False``: an utterance of ``num_samples`` samples has
``round(num_samples / shift_samples)`` frames and frame ``t`` stands for the interval
``[t * frame_shift, (t + 1) * frame_shift)`` seconds (its analysis window is centred on the middle of
that interval). Hence:

* a frame's label is the symbol of the segment that contains the frame's centre
  ``(t + 0.5) * frame_shift`` (the last frame may end a little after the audio: it takes the last
  segment);
* a boundary between frames ``t - 1`` and ``t`` lies at ``t * frame_shift`` seconds.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def num_frames(num_samples: int, sampling_rate: int, frame_shift: float = 0.01) -> int:
    """Frames lhotse's Fbank (``snip_edges=False``) produces for ``num_samples`` samples."""
    shift = int(round(frame_shift * sampling_rate))
    return int((num_samples + shift // 2) // shift)


def frame_to_seconds(frame: int | np.ndarray, frame_shift: float = 0.01):
    """Start time (s) of ``frame``; also the time of a boundary just before it."""
    return frame * frame_shift


def seconds_to_frame(seconds: float, frame_shift: float = 0.01) -> int:
    """The frame whose interval contains ``seconds``: ``floor(seconds / frame_shift)``."""
    return int(math.floor(seconds / frame_shift + 1e-9))


def seconds_to_samples(seconds: float, sampling_rate: int) -> int:
    return int(round(seconds * sampling_rate))


def tier_to_frame_symbols(
    items: Sequence, num_frames: int, frame_shift: float = 0.01, offset: float = 0.0
) -> list[str]:
    """Per-frame symbols of an alignment tier (lhotse ``AlignmentItem``: symbol, start, duration).

    Args:
        items: segments sorted by start, in seconds relative to ``offset``.
        offset: subtracted from item starts (e.g. a cut's start within its recording).

    Returns:
        ``num_frames`` symbols: frame ``t`` takes the segment containing ``(t + 0.5) * frame_shift``;
        frames before the first segment take the first, after the last take the last.
    """
    if not items:
        raise ValueError("cannot convert an empty alignment tier to frames")
    starts = np.array([it.start - offset for it in items])
    centres = (np.arange(num_frames) + 0.5) * frame_shift
    index = np.clip(np.searchsorted(starts, centres, side="right") - 1, 0, len(items) - 1)
    return [items[i].symbol for i in index]


def segments(labels: Sequence) -> list[tuple[object, int, int]]:
    """Run-length segments ``(label, start_frame, num_frames)`` of a per-frame label sequence."""
    out: list[tuple[object, int, int]] = []
    for t, label in enumerate(labels):
        if out and out[-1][0] == label:
            out[-1] = (label, out[-1][1], out[-1][2] + 1)
        else:
            out.append((label, t, 1))
    return out
