"""Energy-based voice activity detection: a recording of any length -> speech segments below a maximum duration.

    audio, one block at a time (mono mix-down at the file's own rate)
      -> frame energies in dB (10 ms frames, DC removed)
      pass 1: a fixed-size histogram of the energies -> noise floor = their 10th percentile
      pass 2: hysteresis: speech starts where a frame exceeds floor + start_db (backdated to the
              start of the run of frames above floor + stop_db) and ends after min_silence_s
              below floor + stop_db; bursts shorter than min_speech_s are dropped; speech
              longer than max_segment_s is split at its quietest point; pad_s of context is
              added on each side where there is silence to take it from

The percentile of the whole file is a robust floor when at least a tenth of it is
not speech, and a histogram needs the same small memory for a minute or ten
hours. Memory stays bounded whatever the file's length: one block of audio, the
histogram, and the energies of the one segment being formed (at most
max_segment_s of 10 ms frames). The file is read twice (once per pass), which
costs far less than recognising it.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from asr.audio import AudioError, audio_info
from asr.segment_config import SegmenterConfig

HIST_LOW_DB, HIST_HIGH_DB, HIST_STEP_DB = -140.0, 20.0, 0.1  # range and resolution of the energy histogram
SMOOTH_FRAMES = 5  # moving average over this many frames when looking for the quietest split point
EPS = 1e-14  # power added before the log: digital silence reads as -140 dB


@dataclass(frozen=True)
class Segment:
    """A stretch of a recording to recognise, in seconds from its start."""

    start: float  # seconds
    end: float  # seconds

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.end - self.start


# ---------------------------------------------------------------- energies


class FrameEnergies:
    """Streaming frame energies: push() sample blocks, get the dB energy of each completed frame.

    Energy = 10 log10(variance of the frame's samples): the mean is removed, so a DC offset
    does not read as sound. Samples of an incomplete frame wait for the next block.
    """

    def __init__(self, frame: int) -> None:
        self.frame = frame  # samples per frame
        self.rest = np.zeros(0, dtype=np.float32)  # samples of the incomplete frame

    def push(self, samples: np.ndarray) -> np.ndarray:
        """dB energies (F,) of the frames completed by `samples` (N,)."""
        x = np.concatenate([self.rest, samples.astype(np.float32, copy=False)]) if self.rest.size else samples
        count = x.shape[0] // self.frame
        self.rest = np.array(x[count * self.frame :], dtype=np.float32)
        frames = x[: count * self.frame].reshape(count, self.frame).astype(np.float64)
        return 10.0 * np.log10(frames.var(axis=1) + EPS)

    def finish(self) -> np.ndarray:
        """The energy of the last incomplete frame when it holds at least half a frame, else nothing."""
        rest, self.rest = self.rest, np.zeros(0, dtype=np.float32)
        if rest.shape[0] * 2 < self.frame:
            return np.zeros(0)
        return np.array([10.0 * np.log10(rest.astype(np.float64).var() + EPS)])


class EnergyHistogram:
    """Counts of frame energies in fixed 0.1 dB bins: percentiles of any number of frames in constant memory."""

    def __init__(self) -> None:
        self.counts = np.zeros(int(round((HIST_HIGH_DB - HIST_LOW_DB) / HIST_STEP_DB)) + 1, dtype=np.int64)

    def add(self, energies: np.ndarray) -> None:
        """Count energies (F,) in dB (values outside the range go to the end bins)."""
        idx = np.clip(np.round((energies - HIST_LOW_DB) / HIST_STEP_DB), 0, self.counts.shape[0] - 1).astype(np.int64)
        self.counts += np.bincount(idx, minlength=self.counts.shape[0])

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (dB, to 0.1 dB) of the counted energies; None when nothing was counted."""
        total = int(self.counts.sum())
        if total == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * total))
        return HIST_LOW_DB + HIST_STEP_DB * int(np.searchsorted(np.cumsum(self.counts), rank))


# ---------------------------------------------------------------- detection


class SpeechDetector:
    """Streaming hysteresis over frame energies; `push` and `finish` return the finished Segments.

    Memory: the energies of the segment being formed, at most max_segment_s worth of frames.
    """

    def __init__(self, cfg: SegmenterConfig, floor_db: float, frame_s: float, duration: float | None = None) -> None:
        self.frame_s = frame_s  # seconds per frame (exact: frame samples / sample rate)
        self.duration = duration  # seconds of the recording, to clip the last padding (None: unknown)
        self.on = floor_db + cfg.start_db  # dB a frame must reach to start speech
        self.off = floor_db + cfg.stop_db  # dB frames must keep for speech to go on
        self.min_speech = max(1, math.ceil(cfg.min_speech_s / frame_s))
        self.min_silence = max(1, math.ceil(cfg.min_silence_s / frame_s))
        self.pad_start = int(round(cfg.pad_s / frame_s))
        self.pad_end = min(self.pad_start, self.min_silence)  # only silence already seen is added after speech
        self.max_speech = max(2, int(cfg.max_segment_s / frame_s) - self.pad_start - self.pad_end)
        self.i = 0  # index of the next frame
        self.active = False  # inside a segment
        self.start = 0  # first frame of the open segment (or of the run of frames above `off` before it)
        self.last = -1  # last frame above `off` in the open segment
        self.energies: deque[float] = deque()  # energies from `start` on
        self.continued = False  # the open segment continues a split one: no start padding, never dropped
        self.prev_end = 0  # end frame (padded) of the last emitted segment
        self.out: list[Segment] = []

    def push(self, energies: Iterable[float]) -> list[Segment]:
        """Feed frame energies (dB) in time order; returns the segments they completed."""
        for e in np.asarray(energies, dtype=np.float64).tolist():
            self._frame(e)
        out, self.out = self.out, []
        return out

    def finish(self) -> list[Segment]:
        """End of the recording: closes the open segment."""
        if self.active:
            self._close(self.last + 1)
        out, self.out = self.out, []
        return out

    def _frame(self, e: float) -> None:
        i = self.i
        self.i += 1
        if not self.active:
            if e < self.off:
                self.energies.clear()
                return
            if not self.energies:
                self.start = i
            self.energies.append(e)
            if len(self.energies) > self.max_speech // 2:  # a long hum below `on`: keep only its end
                self.energies.popleft()
                self.start += 1
            if e >= self.on:
                self.active, self.last, self.continued = True, i, False
            return
        self.energies.append(e)
        if e >= self.off:
            self.last = i
        elif i - self.last >= self.min_silence:
            self._close(self.last + 1)
            return
        if i + 1 - self.start >= self.max_speech:
            self._split()

    def _close(self, end: int) -> None:
        """End the open segment at frame `end` (exclusive), emitting it unless it is a lone short burst."""
        if end > self.start and (self.continued or end - self.start >= self.min_speech):
            self._emit(self.start, end, pad_start=not self.continued, pad_end=True)
        self.active = False
        self.energies.clear()

    def _split(self) -> None:
        """Cut the open segment (max_speech frames long) at the quietest point of its second half."""
        e = np.fromiter(self.energies, dtype=np.float64)
        smooth = np.convolve(e, np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, mode="same")
        lo = self.max_speech // 2
        cut = lo + int(np.argmin(smooth[lo:]))
        self._emit(self.start, self.start + cut, pad_start=not self.continued, pad_end=False)
        for _ in range(cut):
            self.energies.popleft()
        self.start += cut
        self.continued = True

    def _emit(self, start: int, end: int, *, pad_start: bool, pad_end: bool) -> None:
        s = max(start - self.pad_start, self.prev_end) if pad_start else start
        e = end + self.pad_end if pad_end else end
        self.prev_end = e
        t0, t1 = s * self.frame_s, e * self.frame_s
        if self.duration is not None:
            t1 = min(t1, self.duration)
        if t1 > t0:
            self.out.append(Segment(round(t0, 6), round(t1, 6)))


# ---------------------------------------------------------------- files and arrays


def read_blocks(path: str | os.PathLike, block_s: float) -> Iterator[np.ndarray]:
    """Mono float32 blocks (N,) of an audio file at its own sample rate, channels averaged.

    Raises AudioError naming the file when it cannot be read (also in the middle).
    """
    label = os.fspath(path)
    info = audio_info(path)  # clear errors for missing, empty, unsupported or corrupt files
    block = max(1, int(block_s * info.sample_rate))
    pos = 0
    try:
        with sf.SoundFile(label) as snd:
            for data in snd.blocks(blocksize=block, dtype="float32", always_2d=True):
                mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
                if not np.isfinite(mono).all():
                    bad = int(np.flatnonzero(~np.isfinite(mono))[0])
                    raise AudioError(f"{label}: non-finite sample at {(pos + bad) / info.sample_rate:.3f} s")
                pos += mono.shape[0]
                yield mono
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{label}: corrupt audio data near {pos / info.sample_rate:.2f} s ({err})") from None


def frame_samples(sample_rate: int, cfg: SegmenterConfig) -> int:
    """Samples per analysis frame at `sample_rate`."""
    return max(1, int(round(cfg.frame_s * sample_rate)))


def noise_floor(energies: Iterable[np.ndarray], cfg: SegmenterConfig) -> float:
    """The floor (dB) of a stream of frame-energy arrays: their noise_percentile, at least min_floor_db."""
    hist = EnergyHistogram()
    for e in energies:
        hist.add(e)
    value = hist.percentile(cfg.noise_percentile)
    return cfg.min_floor_db if value is None else max(value, cfg.min_floor_db)


def segment_file(path: str | os.PathLike, cfg: SegmenterConfig = SegmenterConfig()) -> Iterator[Segment]:
    """Speech segments of an audio file, in time order, reading it block by block (two passes)."""
    info = audio_info(path)
    frame = frame_samples(info.sample_rate, cfg)

    def energies() -> Iterator[np.ndarray]:
        framer = FrameEnergies(frame)
        for block in read_blocks(path, cfg.block_s):
            yield framer.push(block)
        yield framer.finish()

    floor = noise_floor(energies(), cfg)
    detector = SpeechDetector(cfg, floor, frame / info.sample_rate, info.duration)
    for e in energies():
        yield from detector.push(e)
    yield from detector.finish()


def wave_energies(wave: np.ndarray | torch.Tensor, sample_rate: int, cfg: SegmenterConfig) -> np.ndarray:
    """dB energies (F,) of the frames of a mono waveform (N,) held in memory."""
    x = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    framer = FrameEnergies(frame_samples(sample_rate, cfg))
    return np.concatenate([framer.push(x.astype(np.float32, copy=False)), framer.finish()])


def is_silent(wave: np.ndarray | torch.Tensor, sample_rate: int, cfg: SegmenterConfig = SegmenterConfig()) -> bool:
    """True when nothing in a short mono waveform (N,) could start speech: no frame reaches
    min_floor_db + start_db (dBFS), and none rises start_db above the file's own floor (its
    noise_percentile frame energy, at least quiet_floor_db). The second test keeps a quiet
    recording (a 16-bit file turned down 40 dB: speech near -80 dBFS over digital silence) from
    reading as silence, while a faint steady hiss or digital silence stays silent."""
    e = wave_energies(wave, sample_rate, cfg)
    if e.size == 0:
        return True
    top = float(e.max())
    if top >= cfg.min_floor_db + cfg.start_db:
        return False
    own_floor = max(float(np.percentile(e, cfg.noise_percentile)), cfg.quiet_floor_db)
    return top < own_floor + cfg.start_db


def segment_wave(wave: np.ndarray | torch.Tensor, sample_rate: int, cfg: SegmenterConfig = SegmenterConfig()
                 ) -> list[Segment]:
    """Speech segments of a mono waveform (N,) held in memory (same detector as `segment_file`)."""
    e = wave_energies(wave, sample_rate, cfg)
    frame = frame_samples(sample_rate, cfg)
    detector = SpeechDetector(cfg, noise_floor([e], cfg), frame / sample_rate, wave.shape[0] / sample_rate)
    return detector.push(e) + detector.finish()
