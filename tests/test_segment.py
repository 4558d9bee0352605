"""Energy segmenter: boundaries of synthetic speech, splitting of long speech, streaming in bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from asr.audio import AudioError
from asr.segment import EnergyHistogram, SegmenterConfig, segment_file, segment_wave

SR = 16000


def speech_like(rng: np.random.Generator, seconds: float, sr: int = SR) -> np.ndarray:
    """Noise with a syllable-rate (4 Hz) envelope never far below -30 dBFS: loud, fluctuating, no long pauses."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    envelope = 0.02 + 0.1 * (1 + np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6.28))) / 2
    return (rng.standard_normal(n) * envelope).astype(np.float32)


def quiet(rng: np.random.Generator, seconds: float, sr: int = SR, level: float = 1e-3) -> np.ndarray:
    """Low background noise (-60 dBFS by default)."""
    return (rng.standard_normal(int(seconds * sr)) * level).astype(np.float32)


def bursts(seed: int, count: int = 12, sr: int = SR, silence_level: float = 1e-3):
    """Speech-like bursts of 0.5-4 s between silences of 0.6-3 s; returns (wave, [(start, end)])."""
    rng = np.random.default_rng(seed)
    parts, truth, pos = [], [], 0
    for _ in range(count):
        gap = quiet(rng, rng.uniform(0.6, 3.0), sr, silence_level)
        burst = speech_like(rng, rng.uniform(0.5, 4.0), sr)
        parts += [gap, burst]
        truth.append(((pos + len(gap)) / sr, (pos + len(gap) + len(burst)) / sr))
        pos += len(gap) + len(burst)
    parts.append(quiet(rng, 1.0, sr, silence_level))
    return np.concatenate(parts), truth


@pytest.mark.parametrize("seed, level", [(0, 1e-3), (1, 1e-4), (2, 0.0)])
def test_boundaries_of_bursts_between_silences(seed, level):
    cfg = SegmenterConfig()
    wave, truth = bursts(seed, silence_level=level)
    segments = segment_wave(wave, SR, cfg)
    assert len(segments) == len(truth)
    for seg, (start, end) in zip(segments, truth):
        # the detected speech lies within 0.1 s of the truth; the segment adds pad_s around it
        assert abs(seg.start + cfg.pad_s - start) <= 0.1, (seg, start)
        assert abs(seg.end - cfg.pad_s - end) <= 0.1, (seg, end)
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))


def test_long_speech_is_split_below_the_maximum_at_quiet_points():
    rng = np.random.default_rng(3)
    # 70 s of speech whose only pauses (0.25 s, shorter than min_silence_s) come every 6-9 s
    pieces, pauses, pos = [quiet(rng, 1.0)], [], SR
    while pos < 71 * SR:
        piece = speech_like(rng, rng.uniform(6.0, 9.0))
        pieces += [piece, quiet(rng, 0.25)]
        pos += len(piece)
        pauses.append((pos / SR, (pos + len(pieces[-1])) / SR))
        pos += len(pieces[-1])
    pieces.append(quiet(rng, 1.0))
    wave = np.concatenate(pieces)
    cfg = SegmenterConfig(max_segment_s=20.0)
    segments = segment_wave(wave, SR, cfg)
    assert len(segments) >= 4
    assert all(s.duration <= cfg.max_segment_s + 1e-6 for s in segments)
    for a, b in zip(segments, segments[1:]):
        assert a.end == pytest.approx(b.start)  # pieces of one stretch of speech abut
        assert any(p0 - 0.05 <= a.end <= p1 + 0.05 for p0, p1 in pauses), a.end  # cut inside a pause
    assert segments[0].start == pytest.approx(1.0 - cfg.pad_s, abs=0.1)
    assert segments[-1].end == pytest.approx(len(wave) / SR - 1.25 + cfg.pad_s, abs=0.1)  # last pause + quiet


def test_clicks_are_dropped_and_short_pauses_do_not_split():
    rng = np.random.default_rng(4)
    wave = np.concatenate([quiet(rng, 2.0), speech_like(rng, 0.05), quiet(rng, 2.0),  # a 50 ms click
                           speech_like(rng, 1.5), quiet(rng, 0.2), speech_like(rng, 1.5), quiet(rng, 2.0)])
    segments = segment_wave(wave, SR)
    assert len(segments) == 1
    assert segments[0].start == pytest.approx(4.05 - 0.2, abs=0.1)
    assert segments[0].end == pytest.approx(7.25 + 0.2, abs=0.1)


def test_silence_only_gives_no_segment():
    assert segment_wave(np.zeros(5 * SR, dtype=np.float32), SR) == []
    assert segment_wave(quiet(np.random.default_rng(5), 5.0), SR) == []


def test_histogram_percentile_matches_numpy():
    e = np.random.default_rng(6).normal(-50, 15, 10000)
    hist = EnergyHistogram()
    hist.add(e[:3000])
    hist.add(e[3000:])
    for q in (1, 10, 50, 90):
        assert hist.percentile(q) == pytest.approx(np.percentile(e, q), abs=0.15)
    assert EnergyHistogram().percentile(10) is None


def test_streaming_a_file_equals_the_in_memory_result_and_works_at_any_rate(tmp_path):
    wave, _ = bursts(7, count=6, sr=44100)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([wave, 0.5 * wave], axis=1), 44100, subtype="FLOAT")
    cfg = SegmenterConfig(block_s=0.37)  # many blocks, frames straddling their edges
    streamed = list(segment_file(path, cfg))
    mono = sf.read(path, dtype="float32")[0].mean(axis=1)
    assert streamed == segment_wave(mono, 44100, cfg)
    assert len(streamed) == 6


def test_streaming_a_long_file_does_not_load_it(tmp_path):
    """10 minutes (38 MB as float32) are segmented with a small fraction of that allocated at once."""
    rng = np.random.default_rng(8)
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as out:
        for _ in range(60):  # 60 x 10 s
            out.write(np.concatenate([quiet(rng, 2.0), speech_like(rng, 7.0), quiet(rng, 1.0)]))
    full_size = 600 * SR * 4
    tracemalloc.start()
    try:
        segments = list(segment_file(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(segments) == 60
    assert peak < full_size / 8, f"peak {peak / 2**20:.1f} MiB while the waveform is {full_size / 2**20:.1f} MiB"


def test_bad_files_and_configs(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="junk.wav"):
        list(segment_file(tmp_path / "junk.wav"))
    with pytest.raises(AudioError, match="no such audio file"):
        list(segment_file(tmp_path / "missing.flac"))
    with pytest.raises(ValueError):
        SegmenterConfig(start_db=3.0, stop_db=6.0)
    with pytest.raises(ValueError):
        SegmenterConfig(max_segment_s=0.3, pad_s=0.2)


def test_a_short_spoken_word_between_silences_is_found(fsdd_dir):
    # "six" said quickly (0.14 s recording): the part loud enough to start speech is shorter
    # still, and a minimum burst of 0.15 s dropped it as a click.
    from asr.audio import load_audio

    word = load_audio(fsdd_dir / "audio" / "yweweler" / "6_yweweler_3.flac", SR).numpy()
    rng = np.random.default_rng(9)
    wave = np.concatenate([quiet(rng, 1.5), word, quiet(rng, 1.5)])
    [segment] = segment_wave(wave, SR)
    assert segment.start <= 1.5 and segment.end >= 1.5 + len(word) / SR - 0.05
