"""Additive noise for synthetic corpora: white, pink and babble noise mixed at a target SNR.

All functions take and return float32 numpy arrays of shape ``(num_samples,)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def white_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise, unit variance."""
    return rng.standard_normal(num_samples).astype(np.float32)


def pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """1/f (pink) noise by spectral shaping of white noise, unit variance."""
    if num_samples < 2:
        return np.zeros(num_samples, np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=num_samples)
    return (noise / (noise.std() + 1e-12)).astype(np.float32)


def babble_noise(
    num_samples: int, talkers: Sequence[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Sum of other utterances, each tiled to ``num_samples`` from a random offset; unit variance."""
    if not talkers:
        raise ValueError("babble noise needs at least one other utterance")
    out = np.zeros(num_samples, np.float64)
    for talker in talkers:
        if talker.size == 0:
            continue
        reps = int(np.ceil((num_samples + talker.size) / talker.size))
        tiled = np.tile(talker / (talker.std() + 1e-12), reps)
        offset = int(rng.integers(0, talker.size))
        out += tiled[offset : offset + num_samples]
    return (out / (out.std() + 1e-12)).astype(np.float32)


def mix_at_snr(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, speech_mask: np.ndarray | None = None
) -> np.ndarray:
    """``speech + g * noise`` with ``g`` chosen so that the speech-to-noise power ratio is ``snr_db``.

    Speech power is measured over ``speech_mask`` (active speech, e.g. the non-silence phones) when
    given, so leading/trailing pauses do not lower the effective SNR.
    """
    if speech.shape != noise.shape:
        raise ValueError(f"speech {speech.shape} and noise {noise.shape} differ in shape")
    active = speech[speech_mask] if speech_mask is not None and speech_mask.any() else speech
    speech_power = float(np.mean(active.astype(np.float64) ** 2))
    noise_power = float(np.mean(noise.astype(np.float64) ** 2))
    if noise_power == 0.0:
        return speech.copy()
    gain = np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (speech + gain * noise).astype(np.float32)


def snr_db(speech: np.ndarray, noise: np.ndarray, speech_mask: np.ndarray | None = None) -> float:
    """The SNR (dB) of ``speech`` against ``noise`` as :func:`mix_at_snr` defines it."""
    active = speech[speech_mask] if speech_mask is not None and speech_mask.any() else speech
    return float(10.0 * np.log10(np.mean(active.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2)))
