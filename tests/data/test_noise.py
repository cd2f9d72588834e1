import numpy as np
import pytest

from asr_kd.data.noise import babble_noise, mix_at_snr, pink_noise, snr_db, white_noise


def _psd_slope(x: np.ndarray) -> float:
    """log-log slope of the power spectrum between 1% and 40% of the band."""
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.arange(power.size)
    band = (f > 0.01 * power.size) & (f < 0.4 * power.size)
    return float(np.polyfit(np.log(f[band]), np.log(power[band] + 1e-20), 1)[0])


def test_white_and_pink_spectra():
    rng = np.random.default_rng(0)
    white, pink = white_noise(2**16, rng), pink_noise(2**16, rng)
    assert abs(white.std() - 1.0) < 0.02 and abs(pink.std() - 1.0) < 1e-3
    assert abs(_psd_slope(white)) < 0.1
    assert -1.15 < _psd_slope(pink) < -0.85  # 1/f


@pytest.mark.parametrize("target", [0.0, 7.5, 30.0])
def test_mix_at_snr_hits_target(target):
    rng = np.random.default_rng(1)
    speech = np.zeros(16000, np.float32)
    speech[4000:12000] = 0.3 * np.sin(np.arange(8000) * 0.05)
    mask = np.zeros(16000, bool)
    mask[4000:12000] = True
    noise = white_noise(16000, rng)
    mixed = mix_at_snr(speech, noise, target, mask)
    assert snr_db(speech, mixed - speech, mask) == pytest.approx(target, abs=1e-3)
    # without the mask the leading/trailing silence halves the speech power: 3 dB lower
    assert snr_db(speech, mixed - speech) == pytest.approx(target - 10 * np.log10(2), abs=1e-3)


def test_babble_is_a_mix_of_talkers():
    rng = np.random.default_rng(2)
    talkers = [np.sin(np.arange(3000) * w).astype(np.float32) for w in (0.01, 0.2)]
    babble = babble_noise(10000, talkers, rng)
    assert babble.shape == (10000,) and abs(babble.std() - 1.0) < 1e-3
    spectrum = np.abs(np.fft.rfft(babble))
    peaks = sorted(np.argsort(spectrum)[-2:])
    freqs = np.fft.rfftfreq(10000) * 2 * np.pi
    assert freqs[peaks[0]] == pytest.approx(0.01, abs=2e-3) and freqs[peaks[1]] == pytest.approx(0.2, abs=2e-3)
    with pytest.raises(ValueError):
        babble_noise(100, [], rng)
