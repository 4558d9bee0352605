"""Per-sample steps of the loader: read shards or manifest entries, decode, tokenise.

A `Sample` is what flows through shuffling and bucketing: metadata plus the
still-encoded audio (tar member bytes, or the file path for a manifest), so
buffers stay small and batches are formed before anything is decoded. Faults
in the data (a truncated tar, bad json, audio that does not decode or is too
short, a whole file longer than its manifest says, a text with characters
outside the vocabulary) raise `SampleError` in the pure functions; the
generators here turn them into a warning and a count (texts outside the
vocabulary counted apart from audio faults).
"""

from __future__ import annotations

import json
import logging
import random
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import torch
from webdataset.gopen import gopen

from asr.audio import audio_info, load_audio, resample
from asr.data.manifest import MAX_SECONDS, Utterance, breaks_lines
from asr.errors import AsrError
from asr.text import CharTokenizer, OOVError

log = logging.getLogger(__name__)

# what a broken tar stream raises: tarfile, the opener (missing file, failed pipe/curl), decompressors
STREAM_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError)
# Shortest decoded audio worth training on: a few 10 ms frames more than a 25 ms window, what the
# features and the listener's time reduction need (shorter clips make the model's input empty).
MIN_AUDIO_SECONDS = 0.1
DEFAULT_CUT_TOLERANCE = 0.1  # seconds a whole file may exceed its manifest duration when no tolerance is set


class SampleError(AsrError):
    """One sample of a shard or manifest cannot be used; `text` is True when its transcript is the fault."""

    def __init__(self, message: str, *, text: bool = False) -> None:
        super().__init__(message)
        self.text = text


@dataclass(frozen=True)
class ShardSource:
    """One shard to read."""

    url: str  # local path, http(s):// URL or pipe: command (webdataset's gopen)
    utterances: int | None = None  # samples the index says it holds, to count silently lost ones
    local: bool = False  # a file found in a folder or index: opened as a file, never as a URL or command


@dataclass
class Counts:
    """Samples a worker has skipped (faulty) and dropped (duration filter) so far."""

    skipped: int = 0  # every faulty sample
    dropped: int = 0  # outside the duration limits, or the partial last batch with drop_last
    oov: int = 0  # of `skipped`: transcripts with characters outside the vocabulary


@dataclass(frozen=True)
class Sample:
    """An utterance before decoding."""

    key: str  # tar member key, or the id for a manifest
    id: str  # utterance id
    text: str  # transcript as stored
    duration: float  # declared seconds (index/manifest), used for filtering and bucketing
    speaker: str | None  # speaker id
    audio: bytes | str  # encoded audio bytes (shards) or file path (manifests)
    origin: str  # shard URL or manifest path, for messages
    offset: float = 0.0  # start inside the file (manifest segments)
    speed: float = 1.0  # speed perturbation factor applied when decoding (1.0: none)
    whole_file: bool = False  # a manifest utterance that is its whole file (offset 0, no other utterance uses it)

    @property
    def seconds(self) -> float:
        """Seconds after speed perturbation: what bucketing and batch sizes count."""
        return self.duration / self.speed


@dataclass(frozen=True)
class Decoded:
    """A sample with its waveform and target ids."""

    sample: Sample  # metadata
    wave: torch.Tensor  # (N,) float32 at the loader's sample rate
    target: list[int] | None  # character ids without [GO]/[EOS]; None without a tokenizer


def split_member_name(name: str) -> tuple[str, str]:
    """(key, extension) the way webdataset splits: at the first dot of the last path part."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def sample_from_members(key: str, members: dict[str, bytes], origin: str) -> Sample:
    """Build a Sample from the members of one key: `json` plus exactly one audio member."""
    where = f"sample {key!r} in {origin}"
    if "json" not in members:
        raise SampleError(f"{where}: no .json member")
    audio = [ext for ext in members if ext != "json"]
    if len(audio) != 1:
        raise SampleError(f"{where}: expected one audio member, found {sorted(audio) or 'none'}")
    try:
        meta = json.loads(members["json"].decode("utf-8"))
        sample = Sample(
            key=key,
            id=str(meta["id"]),
            text=str(meta["text"]),
            duration=float(meta["duration"]),
            speaker=meta.get("speaker"),
            audio=members[audio[0]],
            origin=origin,
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:  # JSONDecodeError: ValueError
        raise SampleError(f"{where}: bad json: {err!r}") from err
    if not sample.id or breaks_lines(sample.id) or (isinstance(sample.speaker, str) and breaks_lines(sample.speaker)):
        raise SampleError(f"{where}: bad json: an empty id, or an id or speaker with a line break: "
                          f"{sample.id!r}, {sample.speaker!r}")
    if not 0 < sample.duration <= MAX_SECONDS:
        raise SampleError(f"{where}: bad json: 'duration' must be a positive number of seconds up to "
                          f"{MAX_SECONDS:g}, got {sample.duration!r}")
    return sample


def sample_from_utterance(utt: Utterance, origin: str, whole_file: bool = False) -> Sample:
    """A manifest utterance as a Sample (audio read from disk when decoded)."""
    return Sample(utt.id, utt.id, utt.text, utt.duration, utt.speaker, utt.audio, origin, utt.offset,
                  whole_file=whole_file)


class TarStreamError(Exception):
    """Reading a tar stream failed; `member` is the member being read, if a header was read."""

    def __init__(self, member: str | None, cause: BaseException):
        super().__init__(f"{cause!r}" + (f" while reading member {member!r}" if member else ""))
        self.member = member


def tar_members(url: str, local: bool = False) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every regular member of a tar: a local file, or streamed through webdataset's
    URL opener (http(s)://, pipe:) when the user typed such a URL."""
    member = None
    try:
        stream = open(url, "rb") if local else gopen(url)
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for info in tar:
                    if info.isreg():
                        member = info.name
                        data = tar.extractfile(info).read()
                        member = None
                        yield info.name, data
        finally:
            stream.close()
    except STREAM_ERRORS as err:
        raise TarStreamError(member, err) from err


def read_shard(shard: ShardSource, counts: Counts) -> Iterator[Sample]:
    """Samples of one shard; a faulty sample or a broken tar is skipped with a warning and counted.

    Members of one sample are consecutive; a sample is complete when the next key starts.
    A stream that breaks ends the shard: the sample being read is lost, and with an index,
    so are the samples after it (counted from the index's number for the shard).
    """
    key, members, seen = None, {}, 0

    def finish() -> Iterator[Sample]:
        try:
            yield sample_from_members(key, members, shard.url)
        except SampleError as err:
            log.warning("skipping %s", err)
            counts.skipped += 1

    try:
        for name, data in tar_members(shard.url, shard.local):
            name_key, ext = split_member_name(name)
            if name_key != key:
                if key is not None:
                    yield from finish()
                key, members, seen = name_key, {}, seen + 1
            members[ext] = data
        if key is not None:
            yield from finish()
    except TarStreamError as err:
        broken = split_member_name(err.member)[0] if err.member else None
        if key is not None and broken != key:  # the sample read so far is whole; it checks itself
            yield from finish()
        if broken is not None:
            seen += broken != key
            counts.skipped += 1
        where = f" in sample {broken!r}" if broken else ""
        log.warning("skipping the rest of shard %s: read failed%s: %s", shard.url, where, err)
        if seen == 0 and shard.utterances is None:  # nothing read and no index to count the loss: one at least
            log.warning("shard %s: unreadable and not indexed; counted as one lost sample", shard.url)
            counts.skipped += 1
    if shard.utterances is not None and seen < shard.utterances:
        log.warning("shard %s: %d of %d indexed samples were never read", shard.url, shard.utterances - seen, shard.utterances)
        counts.skipped += shard.utterances - seen


def read_utterances(utterances: Iterable[Utterance], origin: str, shared: frozenset[str] = frozenset()
                    ) -> Iterator[Sample]:
    """Samples of manifest utterances (nothing is read until decoding); `shared`: audio paths of several."""
    for utt in utterances:
        yield sample_from_utterance(utt, origin, whole_file=utt.offset == 0 and utt.audio not in shared)


def filter_duration(
    samples: Iterable[Sample], min_duration: float | None, max_duration: float | None, counts: Counts
) -> Iterator[Sample]:
    """Drop (and count) samples outside [min_duration, max_duration] seconds."""
    for s in samples:
        if (min_duration is not None and s.duration < min_duration) or (max_duration is not None and s.duration > max_duration):
            counts.dropped += 1
            continue
        yield s


def decode_sample(
    sample: Sample, sample_rate: int, tokenizer: CharTokenizer | None, tolerance: float | None,
    min_seconds: float | None = None,
) -> Decoded:
    """Waveform at `sample_rate` and target ids; SampleError when the audio or text is unusable.

    Audio shorter than `min_seconds` is unusable; so is a whole file (manifest) longer than declared
    by more than `tolerance` (without a tolerance it is cut to the declared length, with a warning).
    """
    audio_file = f" ({sample.audio})" if isinstance(sample.audio, str) else ""
    where = f"sample {sample.key!r}{audio_file} in {sample.origin}"
    target = None
    if tokenizer is not None:
        try:
            target = tokenizer.encode(sample.text, sample.id)
        except OOVError as err:
            raise SampleError(f"{where}: text outside the vocabulary: {err}", text=True) from err
    duration = sample.duration if isinstance(sample.audio, str) else None  # manifest: cut the segment
    try:
        if sample.whole_file:
            _check_whole_file(sample, where, tolerance)
        wave = load_audio(sample.audio, sample_rate, name=where, offset=sample.offset, duration=duration)
    except SampleError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure makes this one sample unusable
        raise SampleError(f"{where}: audio does not decode: {err}") from err
    seconds = wave.shape[-1] / sample_rate
    if min_seconds is not None and seconds < min_seconds:
        raise SampleError(f"{where}: audio too short to use: {wave.shape[-1]} samples ({1000 * seconds:.1f} ms, "
                          f"under {min_seconds:g} s)")
    if tolerance is not None and abs(seconds - sample.duration) > tolerance:
        raise SampleError(f"{where}: audio lasts {seconds:.3f} s but {sample.duration:g} s were declared (truncated?)")
    if sample.speed != 1.0:
        wave = change_speed(wave, sample_rate, sample.speed)
    return Decoded(sample, wave, target)


def _check_whole_file(sample: Sample, where: str, tolerance: float | None) -> None:
    """A manifest utterance that is a whole file must not be shorter than the file (its header says)."""
    lasts = audio_info(sample.audio, name=where).duration
    if lasts <= sample.duration + (DEFAULT_CUT_TOLERANCE if tolerance is None else tolerance):
        return
    what = f"the file lasts {lasts:.3f} s but the manifest says {sample.duration:g} s"
    if tolerance is not None:
        raise SampleError(f"{where}: {what} (give an offset to mark a segment)")
    log.warning("%s: %s; only the first %g s are read", where, what, sample.duration)


def change_speed(wave: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """Play `wave` `factor` times faster, pitch and tempo together (Kaldi's and sox's `speed`).

    Resampling from sample_rate * factor to sample_rate: the result lasts 1 / factor as long.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    return resample(wave, int(round(sample_rate * factor)), sample_rate)


def assign_speeds(samples: Iterable[Sample], factors: tuple[float, ...], rng: random.Random) -> Iterator[Sample]:
    """Each sample with a speed factor drawn uniformly from `factors` (unchanged when there are none).

    One draw per utterance and epoch (as WeNet and SpeechBrain do) instead of Kaldi's three copies
    of the corpus: an epoch keeps its length, and over epochs each utterance is heard at every speed.
    """
    for s in samples:
        yield replace(s, speed=rng.choice(factors)) if factors else s


def decode_samples(
    samples: Iterable[Sample], sample_rate: int, tokenizer: CharTokenizer | None, tolerance: float | None, counts: Counts,
    min_seconds: float | None = None,
) -> list[Decoded]:
    """decode_sample over a batch, skipping (with a warning) and counting the failures."""
    out = []
    for s in samples:
        try:
            out.append(decode_sample(s, sample_rate, tokenizer, tolerance, min_seconds))
        except SampleError as err:
            log.warning("skipping %s", err)
            counts.skipped += 1
            counts.oov += err.text
    return out
