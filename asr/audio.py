"""Audio in: any file libsndfile reads -> float32 mono waveform at 16 kHz.

Files (or bytes from a shard) are read with soundfile in blocks, mixed down to
mono block by block into one preallocated float32 array, and resampled with
torchaudio in chunks, so loading a long recording never holds a float64 or a
multi-channel copy of it. Every problem with the input (missing, a directory
or special file, corrupt, empty, NaN, an implausible sample rate, unsupported
format) is an `AudioError` naming the file; a WAV file holding less than its
header declares is read with a warning.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr.errors import AsrError
from asr.files import file_problem

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz of every waveform the toolkit works on
MIN_FILE_RATE = 1000  # Hz: a header claiming a lower sample rate (or a higher one than MAX_FILE_RATE) is refused
MAX_FILE_RATE = 768000  # Hz
WAV_HEADER_BYTES = 1 << 16  # how far into a WAV file its "data" chunk header is looked for
BLOCK_FRAMES = 1 << 16  # frames read (and mixed down) at a time
RESAMPLE_CHUNK_SECONDS = 10.0  # longer audio is resampled in chunks of about this length (bounds the temporaries)
LOWPASS_FILTER_WIDTH = 6  # torchaudio.functional.resample's default sinc width (zero crossings)
ROLLOFF = 0.99  # torchaudio.functional.resample's default cutoff, a fraction of the lower Nyquist

# File extensions libsndfile reads, beyond the lower-cased names of its major formats.
EXTRA_EXTENSIONS = {"aif", "aifc", "oga", "opus", "snd", "sph"}
HEADERLESS = {"raw"}  # formats libsndfile lists but cannot open without being told the layout

Source = Union[str, os.PathLike, bytes, bytearray, memoryview]


class AudioError(AsrError):
    """Audio that cannot be used: missing, unreadable, empty, non-finite or of an unsupported format."""


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says."""

    frames: int  # samples per channel
    sample_rate: int  # Hz
    channels: int  # interleaved channels in the file
    duration: float  # seconds, frames / sample_rate
    format: str  # libsndfile's major format, e.g. "WAV", "FLAC"


def supported_extensions() -> set[str]:
    """Lower-case file extensions (no dot) of the formats this libsndfile build reads."""
    return ({name.lower() for name in sf.available_formats()} | EXTRA_EXTENSIONS) - HEADERLESS


def audio_info(source: Source, *, name: str | None = None) -> AudioInfo:
    """Header of an audio file or of audio bytes, without reading the samples."""
    label = _label(source, name)
    with _open(source, label) as snd:
        frames, sr = snd.frames, snd.samplerate
        return AudioInfo(frames=frames, sample_rate=sr, channels=snd.channels, duration=frames / sr, format=snd.format)


def load_audio(
    source: Source,
    sample_rate: int = SAMPLE_RATE,
    *,
    name: str | None = None,
    offset: float = 0.0,
    duration: float | None = None,
) -> torch.Tensor:
    """Read a file (or audio bytes) as a float32 mono waveform (N,) at `sample_rate`.

    `offset` and `duration` (seconds) select a segment; the reader seeks to it
    instead of decoding the whole file. `name` labels bytes in error messages
    (for example "utt1.flac in train-000003.tar").
    """
    label = _label(source, name)
    if sample_rate <= 0:
        raise AudioError(f"{label}: target sample rate must be positive, got {sample_rate}")
    if offset < 0 or not math.isfinite(offset):
        raise AudioError(f"{label}: offset must be a finite number of seconds >= 0, got {offset}")
    if duration is not None and (duration < 0 or not math.isfinite(duration)):
        raise AudioError(f"{label}: duration must be a finite number of seconds >= 0, got {duration}")
    with _open(source, label) as snd:
        if snd.format in ("WAV", "WAVEX"):
            _warn_if_truncated(source, label)
        rate = snd.samplerate
        start = int(round(offset * rate))
        total = snd.frames
        if offset > 0 and start >= total:
            raise AudioError(f"{label}: offset {offset:g} s is past the end of the audio ({total / rate:g} s)")
        count = total - start if duration is None else min(int(round(duration * rate)), total - start)
        if start:
            _seek(snd, start, label)
        mono = _read_mono(snd, count, label, start)
    if mono.size == 0:
        what = "the selected segment is empty" if (offset or duration is not None) else "no samples"
        raise AudioError(f"{label}: empty audio ({what})")
    wave = torch.from_numpy(mono)
    if rate != sample_rate:
        wave = resample(wave, rate, sample_rate)
    return wave


def save_audio(path: str | os.PathLike, wave: torch.Tensor | np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
    """Write a waveform (N,) or (N, channels) in [-1, 1]; the format follows the extension.

    `subtype` is soundfile's, e.g. "FLOAT" for lossless float WAV (default: 16-bit PCM where it applies).
    """
    data = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    sf.write(os.fspath(path), data, sample_rate, subtype=subtype)


def resample(wave: torch.Tensor, orig_freq: int, new_freq: int, *, chunk_seconds: float = RESAMPLE_CHUNK_SECONDS) -> torch.Tensor:
    """`torchaudio.functional.resample` of a 1-D waveform, run chunk by chunk on long input.

    Chunks start on multiples of the rate ratio's period and carry enough context
    for the sinc filter, so the output equals the one-shot resample (to float
    rounding) while the temporary buffers stay the size of one chunk.
    """
    if orig_freq == new_freq:
        return wave
    g = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // g, new_freq // g  # one period: `orig` input samples -> `new` output samples
    n = wave.shape[-1]
    out_len = math.ceil(new * n / orig)
    periods = max(1, int(chunk_seconds * orig_freq) // orig)  # chunk length, in periods
    if n <= periods * orig:
        return AF.resample(wave, orig_freq, new_freq)
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF))  # filter half-width, input samples
    ctx = math.ceil(width / orig) + 1  # context on each side, in periods
    out = wave.new_empty(out_len)
    for p0 in range(0, math.ceil(n / orig), periods):
        p1 = p0 + periods
        lo = max(0, p0 - ctx)
        piece = AF.resample(wave[lo * orig : min(n, (p1 + ctx) * orig)], orig_freq, new_freq)
        keep = piece[(p0 - lo) * new :][: (p1 - p0) * new]
        out[p0 * new : p0 * new + keep.shape[0]] = keep
    return out


def _label(source: Source, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<audio bytes>"
    return os.fspath(source)


def _open(source: Source, label: str) -> sf.SoundFile:
    """Open for reading, turning every failure into an AudioError that says what is wrong."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError(f"{label}: empty audio (0 bytes)")
        try:
            snd = sf.SoundFile(io.BytesIO(bytes(source)))
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            raise AudioError(f"{label}: not readable audio ({_why(err)})") from None
        return _checked(snd, label)
    path = Path(os.fspath(source))
    problem = file_problem(path, "audio file")
    if problem is not None:
        raise AudioError(f"{label}: {problem}")
    ext = path.suffix.lower().lstrip(".")
    try:
        if path.stat().st_size == 0:
            raise AudioError(f"{label}: empty audio file (0 bytes)")
        return _checked(sf.SoundFile(path), label)
    except PermissionError:
        raise AudioError(f"{label}: cannot read audio file (permission denied)") from None
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        if ext not in supported_extensions():
            known = ", ".join(sorted(supported_extensions()))
            raise AudioError(f"{label}: unsupported audio format '.{ext}' (readable: {known})") from None
        raise AudioError(f"{label}: corrupt or unreadable {ext or 'audio'} file ({_why(err)})") from None


def _checked(snd: sf.SoundFile, label: str) -> sf.SoundFile:
    """`snd`, unless its header claims an implausible sample rate (then closed, and an AudioError)."""
    if not MIN_FILE_RATE <= snd.samplerate <= MAX_FILE_RATE:
        rate = snd.samplerate
        snd.close()
        raise AudioError(f"{label}: the header claims a sample rate of {rate} Hz (expected "
                         f"{MIN_FILE_RATE}..{MAX_FILE_RATE} Hz): a corrupt or mislabelled file")
    return snd


def wav_shortfall(source: Source) -> tuple[int, int] | None:
    """(bytes of samples a WAV header declares, bytes present) when the file holds fewer; else None.

    libsndfile silently shortens such a file to the data present, so a truncated WAV would read
    as a complete, shorter one. Not a RIFF/WAVE file, or a streamed header (size 0 or 0xFFFFFFFF): None.
    """
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            head, size = bytes(source[:WAV_HEADER_BYTES]), len(source)
        elif file_problem(source) is not None:  # never open a FIFO or device here
            return None
        else:
            with open(source, "rb") as f:
                head, size = f.read(WAV_HEADER_BYTES), os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk, length = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"data":
            present = size - (pos + 8)
            if length in (0, 0xFFFFFFFF) or length <= present:
                return None
            return length, present
        pos += 8 + length + (length & 1)  # chunks are padded to an even length
    return None


def _warn_if_truncated(source: Source, label: str) -> None:
    """A warning naming `label` when the WAV holds fewer bytes of samples than its header declares."""
    short = wav_shortfall(source)
    if short is not None:
        declared, present = short
        log.warning("%s: truncated WAV: the header declares %d bytes of samples, the file holds %d "
                    "(%.0f%%); only those are read", label, declared, present, 100.0 * present / declared)


def _why(err: Exception) -> str:
    text = str(err).strip()
    return text.split(": ", 1)[-1] if text else type(err).__name__


def _seek(snd: sf.SoundFile, frame: int, label: str) -> None:
    try:
        snd.seek(frame)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{label}: cannot seek to frame {frame} ({_why(err)})") from None


def _read_mono(snd: sf.SoundFile, count: int, label: str, start: int) -> np.ndarray:
    """Read `count` frames into a float32 mono array, averaging channels one block at a time."""
    channels, rate = snd.channels, snd.samplerate
    mono = np.empty(count, dtype=np.float32)
    block = np.empty((min(BLOCK_FRAMES, max(count, 1)), channels), dtype=np.float32) if channels > 1 else None
    pos = 0
    while pos < count:
        k = min(BLOCK_FRAMES, count - pos)
        try:
            if block is None:
                got = len(snd.read(frames=k, dtype="float32", out=mono[pos : pos + k]))
                chunk = mono[pos : pos + got]
            else:
                got = len(snd.read(frames=k, dtype="float32", always_2d=True, out=block[:k]))
                chunk = mono[pos : pos + got]
                np.mean(block[:got], axis=1, out=chunk)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"{label}: corrupt audio data near {(start + pos) / rate:.2f} s ({_why(err)})") from None
        if not np.isfinite(chunk).all():
            bad = int(np.flatnonzero(~np.isfinite(chunk))[0])
            at = (start + pos + bad) / rate
            raise AudioError(f"{label}: non-finite sample ({chunk[bad]}) at {at:.3f} s")
        pos += got
        if got < k:  # the header promised more frames than the stream holds
            break
    return mono[:pos]
