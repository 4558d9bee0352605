"""Audio files of any length -> transcripts with timed segments, and their output formats.

    files, in order
      -> short file (<= whole_file_s): one piece, the whole file (none when it is silent:
         no frame loud enough for the segmenter to start speech)
         long file: segments from the energy segmenter (asr.segment, streamed over the
         file), each read on its own with asr.audio (seek + resample): one piece each
      -> pieces of consecutive files share batches of at most batch_seconds of padded audio
      -> Recognizer.decode -> texts -> one Transcript per file, yielded in input order

Memory is bounded by the batch size and the segmenter's block size, whatever the
files' lengths. A file that cannot be read (at any point) yields a Transcript
carrying the error, and the other files go on.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from asr.audio import audio_info, load_audio
from asr.errors import AsrError
from asr.search import DecodeOptions
from asr.segment import Segment, SegmenterConfig, is_silent, segment_file

if TYPE_CHECKING:
    from asr.recognizer import Recognizer

OutputFormat = Literal["txt", "json", "srt", "vtt"]
FORMATS: tuple[str, ...] = ("txt", "json", "srt", "vtt")


class TranscriptionError(AsrError):
    """One or more files could not be transcribed."""


@dataclass(frozen=True)
class TranscribeOptions:
    """How files are cut and batched (the search itself is a DecodeOptions)."""

    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)  # how long files are cut
    whole_file_s: float | None = None  # files up to this long are decoded whole (None: segmenter.max_segment_s)
    batch_seconds: float = 160.0  # padded seconds of audio decoded together (batch size x longest piece)
    max_batch_size: int = 32  # pieces decoded together at most

    def __post_init__(self) -> None:
        if not 0 < self.batch_seconds < math.inf or self.max_batch_size < 1:
            raise ValueError(f"transcribe: batch_seconds and max_batch_size must be positive, got {self}")
        if self.whole_file_s is not None and not self.whole_file_s >= 0:  # inf: every file whole; nan fails
            raise ValueError(f"transcribe: whole_file_s must be a number >= 0 (or None), got {self.whole_file_s}")

    @property
    def whole_limit(self) -> float:
        """Seconds up to which a file is one piece."""
        return self.segmenter.max_segment_s if self.whole_file_s is None else self.whole_file_s


@dataclass(frozen=True)
class TimedText:
    """The text of one segment and where it is in the file."""

    start: float  # seconds
    end: float  # seconds
    text: str


@dataclass
class Transcript:
    """The transcript of one file: its text, its timed segments, or the error that stopped it."""

    path: str  # the file as given
    text: str = ""  # the segments' texts joined by spaces
    segments: list[TimedText] = field(default_factory=list)  # in time order (also the empty ones)
    duration: float | None = None  # seconds of audio
    error: str | None = None  # why the file could not be transcribed (None: it was)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: file, duration, text, segments [{start, end, text}] (and error when it failed)."""
        out: dict[str, Any] = {"file": self.path, "duration": self.duration, "text": self.text,
                               "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in self.segments]}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class _Piece:
    """Audio of one segment of file `index`, waiting in a batch."""

    index: int  # position of the file in the input list
    start: float  # seconds in the file
    end: float  # seconds in the file
    wave: torch.Tensor  # (N,) mono at the recognizer's rate


def transcribe_files(recognizer: Recognizer, paths: Sequence[str | os.PathLike],
                     options: TranscribeOptions = TranscribeOptions(),
                     decode: DecodeOptions = DecodeOptions(), lm: torch.nn.Module | None = None,
                     on_progress: Callable[[float], None] | None = None) -> Iterator[Transcript]:
    """One Transcript per path, in input order, as soon as it and the ones before it are done.

    `on_progress(seconds)` is called with the seconds of audio newly covered each time a batch is
    decoded or a file is done: a file's calls add up to its duration, a failed file's too once its
    header was read (so a bar sized by `audio_info` ends full), else to nothing.
    """
    paths = [os.fspath(p) for p in paths]
    results = [Transcript(p) for p in paths]
    pending = [0] * len(paths)  # pieces not yet decoded, per file
    read_done = [False] * len(paths)  # all pieces of the file were read (or it failed)
    covered = [0.0] * len(paths)  # seconds of each file up to the end of its last decoded piece
    next_out = 0
    batch: list[_Piece] = []

    def advance(index: int, upto: float) -> None:
        if on_progress is not None and upto > covered[index]:
            on_progress(upto - covered[index])
        covered[index] = max(covered[index], upto)

    def flush() -> None:
        if not batch:
            return
        lengths = torch.tensor([p.wave.shape[0] for p in batch])
        waves = torch.nn.utils.rnn.pad_sequence([p.wave for p in batch], batch_first=True)  # (B, N)
        texts = recognizer.decode_texts(waves, lengths, decode, lm)
        for piece, text in zip(batch, texts):
            pending[piece.index] -= 1
            if results[piece.index].error is None:
                results[piece.index].segments.append(TimedText(piece.start, piece.end, text))
            advance(piece.index, piece.end)
        batch.clear()

    def ready() -> Iterator[Transcript]:
        nonlocal next_out
        while next_out < len(paths) and read_done[next_out] and pending[next_out] == 0:
            result = results[next_out]
            if result.error is None:
                result.text = " ".join(s.text for s in result.segments if s.text)
            else:
                result.segments = []
            advance(next_out, result.duration or 0.0)  # silence after the last segment, or what a failure skipped
            yield result
            next_out += 1

    rate = recognizer.sample_rate
    for index, path in enumerate(paths):
        pieces = _pieces(index, path, rate, options, results[index])
        while True:
            try:  # only reading the file may fail it; a decoding error stops everything
                piece = next(pieces)
            except StopIteration:
                break
            except AsrError as err:
                results[index].error = str(err)
                break
            longest = max([p.wave.shape[0] for p in batch] + [piece.wave.shape[0]]) / rate
            full = len(batch) >= options.max_batch_size or longest * (len(batch) + 1) > options.batch_seconds
            if batch and full:
                flush()
                yield from ready()
            batch.append(piece)
            pending[index] += 1
        read_done[index] = True
        yield from ready()
    flush()
    yield from ready()


def _pieces(index: int, path: str, rate: int, options: TranscribeOptions, result: Transcript) -> Iterator[_Piece]:
    """The file whole when short, else its speech segments, each read on its own (seek + resample)."""
    info = audio_info(path)
    result.duration = round(info.duration, 6)
    if info.duration <= options.whole_limit:
        wave = load_audio(path, rate)
        if not is_silent(wave, rate, options.segmenter):  # as the segmenter finds no speech in long ones
            yield _Piece(index, 0.0, result.duration, wave)
        return
    segment: Segment
    for segment in segment_file(path, options.segmenter):
        wave = load_audio(path, rate, offset=segment.start, duration=segment.duration)
        yield _Piece(index, segment.start, segment.end, wave)


# ---------------------------------------------------------------- output formats


def timestamp(seconds: float, decimal: str = ".") -> str:
    """HH:MM:SS.mmm (SRT uses "," as the decimal mark), e.g. timestamp(3725.5) == "01:02:05.500"."""
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def format_srt(transcript: Transcript) -> str:
    """SubRip cues, numbered from 1, one per segment with text."""
    cues = [s for s in transcript.segments if s.text]
    return "".join(f"{i}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{s.text}\n\n"
                   for i, s in enumerate(cues, 1))


def format_vtt(transcript: Transcript) -> str:
    """WebVTT: the header, then one cue per segment with text."""
    cues = [s for s in transcript.segments if s.text]
    return "WEBVTT\n\n" + "".join(f"{timestamp(s.start)} --> {timestamp(s.end)}\n{s.text}\n\n" for s in cues)


def format_transcript(transcript: Transcript, fmt: OutputFormat) -> str:
    """The transcript in one of FORMATS (txt: the text and a newline; json: one line)."""
    if fmt == "txt":
        return transcript.text + "\n"
    if fmt == "json":
        return json.dumps(transcript.to_dict(), ensure_ascii=False) + "\n"
    if fmt == "srt":
        return format_srt(transcript)
    if fmt == "vtt":
        return format_vtt(transcript)
    raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")


def output_path(directory: str | os.PathLike, audio: str | os.PathLike, fmt: OutputFormat) -> Path:
    """Where `--output-dir` writes the transcript of `audio`: its name with the format's extension."""
    return Path(directory) / f"{Path(audio).stem}.{fmt}"
