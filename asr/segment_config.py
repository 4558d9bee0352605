"""The segmenter's options, apart from asr.segment so that commands can build their `--help`
from these defaults without importing torch (seconds faster)."""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass


@dataclass(frozen=True)
class SegmenterConfig:
    """How speech is found and cut; times in seconds, levels in dB relative to the noise floor."""

    frame_s: float = 0.01  # analysis frame (non-overlapping), also the time resolution of the boundaries
    noise_percentile: float = 10.0  # the noise floor is this percentile of the file's frame energies
    min_floor_db: float = -75.0  # the floor never goes below this (dBFS): digital silence + a rustle is not speech
    quiet_floor_db: float = -100.0  # a short file below min_floor_db + start_db is speech when it rises start_db
    # above its own floor (never taken below this): a recording turned down 40 dB is still speech
    start_db: float = 12.0  # speech starts when a frame is this far above the floor (upper hysteresis threshold)
    stop_db: float = 6.0  # ... and continues while frames stay this far above it (lower threshold)
    min_speech_s: float = 0.1  # shorter bursts (clicks, bumps) are dropped; quickly said short words last 0.1-0.2 s
    min_silence_s: float = 0.5  # shorter pauses do not end a segment (pauses inside sentences are often 0.3-0.5 s)
    pad_s: float = 0.2  # context kept before and after the speech (at most min_silence_s after it)
    max_segment_s: float = 20.0  # longer speech is split at its quietest point (the padded segment stays below this)
    block_s: float = 10.0  # seconds of audio read at a time

    def __post_init__(self) -> None:
        if not all(math.isfinite(value) for value in astuple(self)):  # nan passes every comparison below
            raise ValueError(f"segmenter: every value must be a finite number, got {self}")
        if not 0 < self.frame_s <= 0.1 or not 0 <= self.noise_percentile <= 100:
            raise ValueError(f"segmenter: frame_s must be in (0, 0.1] and noise_percentile in [0, 100], got {self}")
        if self.stop_db > self.start_db:
            raise ValueError(f"segmenter: stop_db ({self.stop_db}) must not exceed start_db ({self.start_db})")
        if min(self.min_speech_s, self.min_silence_s, self.pad_s) < 0 or self.block_s <= 0:
            raise ValueError(f"segmenter: durations must be >= 0 and block_s > 0, got {self}")
        if self.max_segment_s < 2 * self.pad_s + 10 * self.frame_s:
            raise ValueError(f"segmenter: max_segment_s ({self.max_segment_s}) leaves no room for speech "
                             f"between two pads of {self.pad_s} s")
