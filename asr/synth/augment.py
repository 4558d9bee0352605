"""Degrade clean synthetic speech: additive noise at a given SNR and synthetic reverberation.

The room impulse response is exponentially decaying Gaussian noise after a direct
path (a standard stand-in for a measured RIR): its decay is set by RT60, the time
the energy takes to fall by 60 dB. Both keep the waveform's length.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
RT60_RANGE = (0.2, 0.8)  # seconds, drawn uniformly when reverberating
EPS = 1e-12


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`wave` (N,) plus white Gaussian noise scaled so that signal power / noise power = `snr_db`."""
    noise = rng.standard_normal(wave.shape[0])  # (N,)
    signal_power = float(np.mean(wave.astype(np.float64) ** 2))
    noise *= np.sqrt(signal_power / (10.0 ** (snr_db / 10.0)) / max(float(np.mean(noise**2)), EPS))
    return (wave + noise).astype(np.float32)


def room_impulse_response(rt60: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic RIR (L,): 1 at t=0, then Gaussian noise decaying by 60 dB over `rt60` seconds."""
    length = max(2, int(rt60 * sample_rate))
    t = np.arange(length) / sample_rate
    rir = rng.standard_normal(length) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: amplitude -60 dB at rt60
    rir[0] = 0.0
    rir *= 0.5 / max(np.sqrt(np.sum(rir**2)), EPS)  # reverberant energy a quarter of the direct path's
    rir[0] = 1.0
    return rir


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`wave` (N,) convolved with `rir` (L,), cut to N samples and scaled back to the input's peak."""
    n = wave.shape[0]
    size = 1 << int(np.ceil(np.log2(n + rir.shape[0] - 1)))
    out = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(rir, size), size)[:n]  # (N,)
    peak_in, peak_out = float(np.max(np.abs(wave))), float(np.max(np.abs(out)))
    return (out * (peak_in / max(peak_out, EPS))).astype(np.float32)


def degrade(
    wave: np.ndarray, rng: np.random.Generator, *, snr_db: float | None = None, reverb_prob: float = 0.0
) -> np.ndarray:
    """Reverberate with probability `reverb_prob` (random RT60), then add noise at `snr_db` when given.

    The random draws are always made in the same order, so the result depends only on the generator's seed.
    """
    do_reverb = rng.random() < reverb_prob
    rt60 = rng.uniform(*RT60_RANGE)
    if do_reverb:
        wave = reverberate(wave, room_impulse_response(rt60, rng))
    if snr_db is not None:
        wave = add_noise(wave, snr_db, rng)
    peak = float(np.max(np.abs(wave)))
    return (wave / peak * 0.99).astype(np.float32) if peak > 0.99 else wave.astype(np.float32)
