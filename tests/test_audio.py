"""Audio reading: formats, mono mixdown, resampling, segments, errors, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr.audio import AudioError, audio_info, load_audio, resample, save_audio
from asr.errors import AsrError


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(N,) or (N, C) float32 test signal: a sweep plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    base = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(len(t))
    if channels == 1:
        return base.astype(np.float32)
    return np.stack([base * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


def test_float_wav_reads_back_exactly(tmp_path):
    x = tone(1.0, 16000)
    save_audio(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    wave = load_audio(tmp_path / "a.wav")
    assert wave.dtype == torch.float32 and wave.shape == (16000,)
    assert np.array_equal(wave.numpy(), x)


@pytest.mark.parametrize("ext", ["flac", "ogg", "mp3"])
def test_compressed_formats(tmp_path, ext):
    if ext.upper() not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot handle {ext}")
    x = tone(1.0, 16000)
    path = tmp_path / f"a.{ext}"
    save_audio(path, x, 16000)
    wave = load_audio(path)
    assert abs(len(wave) - 16000) <= 1152  # mp3 may pad a frame
    assert torch.isfinite(wave).all() and wave.abs().max() > 0.1
    assert torch.equal(load_audio(path.read_bytes(), name="a in shard"), wave)


def test_stereo_is_the_mean_of_its_channels(tmp_path):
    x = tone(0.5, 16000, channels=2)
    save_audio(tmp_path / "s.wav", x, 16000, subtype="FLOAT")
    assert np.allclose(load_audio(tmp_path / "s.wav").numpy(), x.mean(axis=1), atol=1e-7)
    x3 = tone(0.5, 16000, channels=3)
    save_audio(tmp_path / "t.flac", x3, 16000, subtype="PCM_24")
    ref, _ = sf.read(tmp_path / "t.flac", dtype="float32")
    assert np.allclose(load_audio(tmp_path / "t.flac").numpy(), ref.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_resampling_matches_torchaudio(tmp_path, rate):
    x = tone(1.3, rate, channels=2)
    save_audio(tmp_path / "r.wav", x, rate, subtype="FLOAT")
    wave = load_audio(tmp_path / "r.wav", 16000)
    ref = AF.resample(torch.from_numpy(x.mean(axis=1)), rate, 16000)
    assert wave.shape == ref.shape and (wave - ref).abs().max() < 1e-5


def test_chunked_resampling_equals_one_shot():
    x = torch.from_numpy(tone(7.0, 44100, seed=3))
    for orig, new in [(44100, 16000), (8000, 16000), (48000, 16000)]:
        one_shot = AF.resample(x, orig, new)
        chunked = resample(x, orig, new, chunk_seconds=0.7)
        assert chunked.shape == one_shot.shape and (chunked - one_shot).abs().max() < 1e-5


def test_segment_read(tmp_path):
    x = tone(3.0, 16000, channels=2)
    save_audio(tmp_path / "seg.flac", x, 16000, subtype="PCM_24")
    full = load_audio(tmp_path / "seg.flac")
    part = load_audio(tmp_path / "seg.flac", offset=1.25, duration=0.5)
    assert torch.equal(part, full[20000:28000])
    assert torch.equal(load_audio(tmp_path / "seg.flac", offset=2.5), full[40000:])
    assert len(load_audio(tmp_path / "seg.flac", offset=2.9, duration=5.0)) == 1600  # clipped at the end
    save_audio(tmp_path / "seg44.wav", tone(2.0, 44100), 44100, subtype="FLOAT")
    part = load_audio(tmp_path / "seg44.wav", offset=0.5, duration=1.0)
    assert len(part) == 16000
    with pytest.raises(AudioError, match="past the end"):
        load_audio(tmp_path / "seg.flac", offset=3.5)
    with pytest.raises(AudioError, match="offset"):
        load_audio(tmp_path / "seg.flac", offset=-1.0)


def test_audio_info(tmp_path):
    save_audio(tmp_path / "i.flac", tone(1.5, 22050, channels=2), 22050)
    info = audio_info(tmp_path / "i.flac")
    assert (info.frames, info.sample_rate, info.channels, info.format) == (33075, 22050, 2, "FLAC")
    assert info.duration == pytest.approx(1.5)
    with pytest.raises(AudioError, match="no such audio file"):
        audio_info(tmp_path / "missing.flac")


def test_errors_name_the_file_and_the_problem(tmp_path):
    cases = {}
    cases["missing.wav"] = "no such audio file"
    (tmp_path / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
    cases["corrupt.flac"] = "corrupt or unreadable flac"
    (tmp_path / "empty.wav").write_bytes(b"")
    cases["empty.wav"] = "empty audio file"
    sf.write(tmp_path / "nosamples.wav", np.zeros(0, dtype=np.float32), 16000)
    cases["nosamples.wav"] = r"empty audio \(no samples\)"
    nan = tone(0.5, 16000)
    nan[4000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    cases["nan.wav"] = r"non-finite sample \(nan\) at 0.250 s"
    inf = tone(0.5, 16000)
    inf[10] = np.inf
    sf.write(tmp_path / "inf.wav", inf, 16000, subtype="FLOAT")
    cases["inf.wav"] = "non-finite sample"
    (tmp_path / "clip.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(100))
    cases["clip.m4a"] = r"unsupported audio format '\.m4a'"
    (tmp_path / "folder.wav").mkdir()
    cases["folder.wav"] = "is a directory"
    for name, message in cases.items():
        with pytest.raises(AudioError, match=message) as err:
            load_audio(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)), err.value
        assert isinstance(err.value, AsrError)


def test_bytes_errors_use_the_given_name():
    with pytest.raises(AudioError, match=r"^utt7\.flac in train-000001\.tar: not readable audio"):
        load_audio(b"not audio at all" * 10, name="utt7.flac in train-000001.tar")
    with pytest.raises(AudioError, match=r"^<audio bytes>: empty"):
        load_audio(b"")


@pytest.mark.parametrize("corpus", ["so762_dir", "fsdd_dir"])
def test_real_speech_files(corpus, request):
    folder = request.getfixturevalue(corpus)
    manifest = next(p for p in sorted(folder.glob("*.jsonl")))
    for line in manifest.read_text().splitlines()[:3]:
        utt = json.loads(line)
        wave = load_audio(folder / utt["audio"])
        assert wave.dtype == torch.float32 and wave.dim() == 1
        assert abs(len(wave) / 16000 - utt["duration"]) < 0.02
        assert 0 < wave.abs().max() <= 1.0


def test_numpy_memory_stays_near_the_mono_output(tmp_path):
    """Blockwise reading: no float64 or multi-channel copy of the whole file (numpy allocations)."""
    path = tmp_path / "long.wav"
    x = tone(60.0, 16000, channels=2)
    save_audio(path, x, 16000, subtype="PCM_16")
    file_float32 = x.nbytes  # 60 s x 2 channels x 4 bytes
    del x
    tracemalloc.start()
    try:
        wave = load_audio(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(wave) == 960000
    assert peak < 0.6 * file_float32  # the mono float32 result is 0.5 of it, plus one block


def test_peak_memory_of_a_long_stereo_44k_file(tmp_path):
    """Reading and resampling 60 s of 44.1 kHz stereo peaks below twice its float32 size (whole process).

    Reading it whole with soundfile peaks at ~2.4x (float32) or ~3.5x (float64 default).
    """
    if sys.platform != "linux":
        pytest.skip("peak resident memory is reset through /proc/self/clear_refs (Linux)")
    path = tmp_path / "long44.wav"
    save_audio(path, tone(60.0, 44100, channels=2), 44100, subtype="PCM_16")
    file_float32 = 60 * 44100 * 2 * 4
    script = textwrap.dedent(
        f"""
        import torch
        from asr.audio import load_audio, resample
        torch.set_num_threads(1)
        resample(torch.zeros(44100), 44100, 16000)  # load the kernels first

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024

        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current resident size
        before = status("VmRSS:")
        wave = load_audio({str(path)!r})
        print(len(wave), status("VmHWM:") - before)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if run.returncode and "clear_refs" in run.stderr:
        pytest.skip("cannot reset the peak resident size here")
    assert run.returncode == 0, run.stderr
    frames, growth = map(int, run.stdout.split())
    assert frames == 960000
    assert growth < 2 * file_float32, f"peak grew by {growth / 1e6:.1f} MB"
