"""Alignment tiers from espeak-ng's phoneme events: exact phone and word ground truth of synthetic speech."""

from __future__ import annotations

import numpy as np
from lhotse.supervision import AlignmentItem

from asr_kd.tts.espeak import PhoneEvent, Synthesis, is_pause

SIL = "SIL"


def alignment_tiers(syn: Synthesis, num_samples: int, sample_rate: int):
    """Phone and word tiers (lhotse ``AlignmentItem`` lists, seconds) from espeak-ng's events.

    Each phone lasts from its event to the next event; espeak's pauses, and any audio before the
    first event, become ``SIL``; consecutive ``SIL`` are merged, so the phone tier covers
    ``[0, num_samples / sample_rate]`` without gaps or overlaps. Boundaries are rounded to samples at
    ``sample_rate``. Returns an error string instead when the events cannot make a valid alignment.
    """
    if not syn.phones:
        return "no_phone_events: espeak-ng reported no phonemes"
    ratio = sample_rate / syn.sample_rate
    starts = [min(num_samples, int(round(p.sample * ratio))) for p in syn.phones] + [num_samples]
    segments: list[list] = []  # [symbol, start, end, word_index]
    if starts[0] > 0:
        segments.append([SIL, 0, starts[0], -1])
    for k, p in enumerate(syn.phones):
        start, end = starts[k], max(starts[k], starts[k + 1])
        if end <= start:
            continue
        symbol = SIL if is_pause(p.phone) else p.phone
        if symbol == SIL and segments and segments[-1][0] == SIL:
            segments[-1][2] = end
        else:
            segments.append([symbol, start, end, -1 if symbol == SIL else p.word_index])
    if segments[-1][2] < num_samples:  # events ended before the audio: trailing silence
        if segments[-1][0] == SIL:
            segments[-1][2] = num_samples
        else:
            segments.append([SIL, segments[-1][2], num_samples, -1])
    phones = [AlignmentItem(s, b / sample_rate, (e - b) / sample_rate) for s, b, e, _ in segments]
    words = []
    for w, word in enumerate(syn.words):
        spans = [(b, e) for s, b, e, wi in segments if wi == w]
        if not spans:
            return f"word_without_phones: word {w} ({word!r}) has no phone events"
        b, e = spans[0][0], spans[-1][1]
        words.append(AlignmentItem(word.upper(), b / sample_rate, (e - b) / sample_rate))
    return phones, words


def speech_mask(phones, num_samples: int, sample_rate: int) -> np.ndarray:
    """Boolean ``(num_samples,)`` mask of the samples inside non-silence phones."""
    mask = np.zeros(num_samples, dtype=bool)
    for p in phones:
        if p.symbol != SIL:
            mask[int(round(p.start * sample_rate)) : int(round((p.start + p.duration) * sample_rate))] = True
    return mask


def split_merged_words(syn: Synthesis, pronounce, same=lambda a, b: a == b) -> Synthesis:
    """Give back the phones of words that espeak-ng spoke merged into the previous word.

    espeak-ng joins some function words to their predecessor ("of the", "in the"): it then sends no
    word event for the second word, and that word's phonemes arrive as the end of the first word's.
    For each such word ``w`` (no phone of its own, the previous word has more phones than ``w``'s own
    phonemization ``pronounce(w)``), the previous word's phones are split when either

    - they end in exactly ``pronounce(w)`` (compared with ``same(spoken, expected)``), or
    - they start with exactly the previous word's own phonemization, and the rest has the length of
      ``pronounce(w)`` and starts with its first phone (espeak-ng's "the" before a vowel: ``D i:``
      where the word alone is ``D @``).

    The phone boundaries are espeak-ng's own; only their word membership changes. Words that match
    neither are left alone (and later rejected by :func:`alignment_tiers` as ``word_without_phones``).
    """
    phones = list(syn.phones)
    for w in range(1, len(syn.words)):
        if any(p.word_index == w for p in phones):
            continue
        prev = [i for i, p in enumerate(phones) if p.word_index == w - 1]
        expected = pronounce(syn.words[w])
        k = len(expected)
        if not 0 < k < len(prev):  # (pauses between the previous word's phones stay pauses)
            continue
        spoken = [phones[i].phone for i in prev]
        if all(same(a, e) for a, e in zip(spoken[-k:], expected)):
            moved = prev[-k:]
        elif (
            len(own := pronounce(syn.words[w - 1])) == len(prev) - k
            and all(same(a, e) for a, e in zip(spoken, own))
            and same(spoken[len(own)], expected[0])
        ):
            moved = prev[len(own) :]
        else:
            continue
        for i in moved:
            phones[i] = PhoneEvent(phone=phones[i].phone, sample=phones[i].sample, word_index=w)
    return Synthesis(audio=syn.audio, sample_rate=syn.sample_rate, phones=phones, words=syn.words)
