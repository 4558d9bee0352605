"""Shuffle buffer, duration buckets and padding into a `Batch`.

Bucketing: `bucket_buffer` samples are sorted by duration and cut, shortest
first, into batches whose padded length stays within `batch_seconds`
(B * longest duration in the batch <= batch_seconds) and, optionally, within
`max_batch_size` samples. A batch is complete when the next sample would not
fit; the incomplete batch at the end of a buffer goes back into the next
buffer, so only the last batch of a stream can be partial. A single sample
longer than `batch_seconds` forms a batch of its own.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import TypeVar

import torch

from asr.data.samples import Counts, Decoded, Sample

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """Padded waveforms, their lengths, texts and (with a tokenizer) targets.

    Shapes: B utterances, N samples of the longest wave, U ids of the longest target.
    """

    ids: list[str]  # utterance ids
    waves: torch.Tensor  # (B, N) float32, zero padded
    wave_lengths: torch.Tensor  # (B,) int64 samples
    texts: list[str]  # transcripts as stored (not normalised)
    durations: list[float]  # seconds of each utterance after speed perturbation (what bucketing used)
    speakers: list[str | None]  # speaker ids
    targets: torch.Tensor | None = None  # (B, U) int64 ids without [GO]/[EOS], padded with the pad id
    target_lengths: torch.Tensor | None = None  # (B,) int64
    skipped: int = 0  # faulty samples the producing worker skipped since its previous batch
    dropped: int = 0  # samples the duration filter dropped since the worker's previous batch
    oov: int = 0  # of `skipped`: samples whose text holds characters outside the vocabulary

    def __len__(self) -> int:
        return len(self.ids)

    def _map_tensors(self, fn) -> Batch:
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on `device`."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """A copy with tensors in page-locked memory (called by DataLoader(pin_memory=True))."""
        return self._map_tensors(lambda t: t.pin_memory())


def empty_batch(skipped: int, dropped: int, oov: int = 0) -> Batch:
    """A batch of no utterances, carrying only counts (the loader does not yield it)."""
    return Batch([], torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), [], [], [], skipped=skipped, dropped=dropped,
                 oov=oov)


def collate(items: Sequence[Decoded], pad_id: int = 0, skipped: int = 0, dropped: int = 0, oov: int = 0) -> Batch:
    """Pad decoded samples into a Batch; targets only when every item has one."""
    if not items:
        return empty_batch(skipped, dropped, oov)
    lengths = torch.tensor([d.wave.shape[-1] for d in items], dtype=torch.long)
    waves = torch.zeros(len(items), int(lengths.max()))  # (B, N)
    for i, d in enumerate(items):
        waves[i, : d.wave.shape[-1]] = d.wave
    targets = target_lengths = None
    if all(d.target is not None for d in items):
        target_lengths = torch.tensor([len(d.target) for d in items], dtype=torch.long)
        targets = torch.full((len(items), int(target_lengths.max())), pad_id, dtype=torch.long)  # (B, U)
        for i, d in enumerate(items):
            targets[i, : len(d.target)] = torch.tensor(d.target, dtype=torch.long)
    samples = [d.sample for d in items]
    return Batch(
        ids=[s.id for s in samples],
        waves=waves,
        wave_lengths=lengths,
        texts=[s.text for s in samples],
        durations=[s.seconds for s in samples],
        speakers=[s.speaker for s in samples],
        targets=targets,
        target_lengths=target_lengths,
        skipped=skipped,
        dropped=dropped,
        oov=oov,
    )


def shuffle_buffer(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    """Items in random order, drawn from a buffer of `size` (size <= 1: unchanged order)."""
    buf: list[T] = []
    for item in items:
        buf.append(item)
        if len(buf) >= size:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def cut_batches(
    samples: Sequence[Sample], batch_seconds: float, max_batch_size: int | None
) -> tuple[list[list[Sample]], list[Sample]]:
    """Split duration-sorted samples into complete batches and the incomplete remainder."""
    batches: list[list[Sample]] = []
    current: list[Sample] = []
    for s in samples:
        fits = (len(current) + 1) * s.seconds <= batch_seconds
        if max_batch_size is not None:
            fits = fits and len(current) < max_batch_size
        if current and not fits:
            batches.append(current)
            current = []
        current.append(s)
    return batches, current


def bucket_batches(
    samples: Iterable[Sample],
    *,
    batch_seconds: float,
    max_batch_size: int | None,
    buffer_size: int,
    rng: random.Random | None,
    drop_last: bool = False,
    counts: Counts | None = None,
) -> Iterator[list[Sample]]:
    """Batches of similar durations (see the module docstring); batch order shuffled by `rng` if given.

    With `drop_last` the partial batch at the end of the stream is dropped and counted in `counts.dropped`.
    """
    buf: list[Sample] = []

    def flush(final: bool) -> Iterator[list[Sample]]:
        nonlocal buf
        batches, rest = cut_batches(sorted(buf, key=lambda s: (s.seconds, s.key)), batch_seconds, max_batch_size)
        if final and rest:
            if drop_last and counts is not None:
                counts.dropped += len(rest)
            elif not drop_last:
                batches.append(rest)
            rest = []
        if rng is not None:
            rng.shuffle(batches)
        buf = rest
        yield from batches

    for s in samples:
        buf.append(s)
        if len(buf) >= buffer_size:
            yield from flush(final=False)
    yield from flush(final=True)
