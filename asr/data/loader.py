"""Streaming loader: shards (or a manifest) -> padded, duration-bucketed batches.

How the data splits over DDP ranks and DataLoader workers (10 shards, 2 ranks,
2 workers per rank):

    shards        s0 s1 s2 s3 s4 s5 s6 s7 s8 s9
                    | shuffled with (seed, epoch): the same order on every rank
                    v
                  s7 s2 s9 s0 s4 s1 s8 s5 s3 s6
                    | round-robin over ranks: shards[rank::world_size]
          +---------+---------------------------+
          v                                     v
    rank 0: s7 s9 s4 s8 s3                rank 1: s2 s0 s1 s5 s6
          | round-robin over workers:            |
          | rank_shards[worker::num_workers]     |
      +---+----------+                     +-----+--------+
      v              v                     v              v
    w0: s7 s4 s3   w1: s9 s8            w0: s2 s1 s6   w1: s0 s5

    in each worker: read tar -> Sample -> duration filter -> shuffle buffer
      (seed, epoch, rank, worker) -> speed factor -> bucket by duration -> decode
      (too short, broken or OOV samples skipped and counted), speed perturb, tokenise -> pad
    (in a sorted curriculum epoch: no shuffling, and batches go shortest first)
    the DataLoader then takes one batch from each worker in turn (w0, w1, w0, ...)

A manifest source splits its utterance list the same way (shuffled with
(seed, epoch), then [rank::world_size][worker::num_workers]).

Uneven splits: when the shard count is not a multiple of world_size, the first
`count % world_size` ranks get one shard more (above: 5 and 5; with 11 shards,
6 and 5). Even with equal shard counts the ranks' batch counts differ, since
bucketing depends on durations, so a DDP trainer must handle ranks that run
out first (for instance stop the epoch when any rank has no batch left, with an
all-reduce of a flag each step, or torch.distributed.algorithms.Join). For the
best balance write a multiple of world_size * num_workers shards of equal size.
Fewer shards than ranks is an error; fewer than workers leaves workers idle.

Order and resume: for a given source, config, rank, world_size and epoch the
batches come in the same order on every run (with any fixed num_workers).
`iter_from(k)` starts at batch k of that order, which is how a trainer resumes
mid-epoch; the workers skip decoding the batches they know come before k.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from asr.data.batching import Batch, bucket_batches, collate, empty_batch, shuffle_buffer
from asr.data.samples import (
    MIN_AUDIO_SECONDS,
    Counts,
    Sample,
    assign_speeds,
    decode_samples,
    filter_duration,
    read_shard,
    read_utterances,
)
from asr.data.sources import ResolvedSource, Source, resolve_source
from asr.errors import AsrError
from asr.text import CharTokenizer

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class LoaderConfig:
    """How batches are formed; the training config can hold one of these."""

    sample_rate: int = 16000  # waves are resampled to this rate (Hz)
    batch_seconds: float = 200.0  # max padded seconds per batch: B * longest duration in it
    max_batch_size: int | None = None  # max utterances per batch (None: only batch_seconds limits)
    shuffle: bool = True  # shuffle shard order, samples and batch order (off for evaluation)
    shuffle_buffer: int = 1000  # samples in the shuffle buffer (per worker)
    bucket_buffer: int = 500  # samples sorted by duration together before cutting batches (per worker)
    seed: int = 0  # base seed; the order depends on (seed, epoch, rank, worker)
    num_workers: int = 0  # DataLoader worker processes that read and decode (0: in the main process)
    max_duration: float | None = None  # drop longer utterances (seconds); counted in `dropped`
    min_duration: float | None = None  # drop shorter utterances (seconds); counted in `dropped`
    drop_last: bool = False  # drop the partial last batch of each worker (counted in `dropped`)
    duration_tolerance: float | None = 0.1  # skip audio whose length differs more from the declared one (None: off)
    # Skip (and count) decoded audio shorter than this many seconds: too short for the features and
    # the listener's time reduction, such a clip would stop training (None: off, e.g. to decode it).
    min_audio_seconds: float | None = MIN_AUDIO_SECONDS
    # Speed perturbation (Ko et al. 2015): each utterance, each epoch, is played at a factor drawn
    # from these (for example [0.9, 1.0, 1.1]); empty = off. Training loaders only.
    speed_perturb: tuple[float, ...] = ()
    # Curriculum (SortaGrad, Amodei et al. 2016): the first `sorted_epochs` epochs go shortest
    # utterances first (whole manifest sorted; shards sorted within each bucket buffer).
    sorted_epochs: int = 0
    pin_memory: bool = False  # page-locked batches for faster copies to a GPU
    prefetch_factor: int = 2  # batches each worker prepares ahead


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world_size): as given, else from torch.distributed when initialised, else (0, 1)."""
    if rank is None and world_size is None:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if rank is None or world_size is None:
        raise ValueError("give both rank and world_size, or neither")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return rank, world_size


def split(items: Sequence[T], rank: int, world_size: int, worker: int, num_workers: int) -> list[T]:
    """This worker's share: round-robin over ranks, then over the rank's workers."""
    return list(items[rank::world_size][worker::num_workers])


def epoch_order(items: Sequence[T], seed: int, epoch: int, shuffle: bool) -> list[T]:
    """Items shuffled with (seed, epoch), identical on every rank; unchanged without shuffle."""
    items = list(items)
    if shuffle:
        random.Random(f"order:{seed}:{epoch}").shuffle(items)
    return items


class _EpochStream(IterableDataset):
    """One epoch of one rank; each DataLoader worker iterates its own share.

    Yields (formed, Batch): formed is False only for a last item that carries counts.
    """

    def __init__(self, source: ResolvedSource, config: LoaderConfig, tokenizer: CharTokenizer | None,
                 rank: int, world_size: int, epoch: int, start: int):
        self.source, self.config, self.tokenizer = source, config, tokenizer
        self.rank, self.world_size, self.epoch, self.start = rank, world_size, epoch, start

    @property
    def shortest_first(self) -> bool:
        """True in the curriculum's shortest-first epochs."""
        return self.epoch < self.config.sorted_epochs

    def _rng(self, what: str, worker: int) -> random.Random:
        return random.Random(f"{what}:{self.config.seed}:{self.epoch}:{self.rank}:{worker}")

    def _samples(self, worker: int, num_workers: int, counts: Counts) -> Iterator[Sample]:
        cfg, src = self.config, self.source
        if src.is_manifest:
            if self.shortest_first:
                items = sorted(src.utterances, key=lambda u: (u.duration, u.id))
            else:
                items = epoch_order(src.utterances, cfg.seed, self.epoch, cfg.shuffle)
            shared = frozenset(a for a, n in Counter(u.audio for u in src.utterances).items() if n > 1)
            yield from read_utterances(split(items, self.rank, self.world_size, worker, num_workers), src.name, shared)
            return
        shards = epoch_order(src.shards, cfg.seed, self.epoch, cfg.shuffle)
        for shard in split(shards, self.rank, self.world_size, worker, num_workers):
            yield from read_shard(shard, counts)

    def __iter__(self) -> Iterator[tuple[bool, Batch]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        cfg, counts, sent = self.config, Counts(), Counts()
        samples = filter_duration(self._samples(worker, num_workers, counts), cfg.min_duration, cfg.max_duration, counts)
        shuffle = cfg.shuffle and not self.shortest_first
        if shuffle:
            samples = shuffle_buffer(samples, cfg.shuffle_buffer, self._rng("samples", worker))
        samples = assign_speeds(samples, tuple(cfg.speed_perturb), self._rng("speed", worker))
        groups = bucket_batches(
            samples,
            batch_seconds=cfg.batch_seconds,
            max_batch_size=cfg.max_batch_size,
            buffer_size=cfg.bucket_buffer,
            rng=self._rng("batches", worker) if shuffle else None,
            drop_last=cfg.drop_last,
            counts=counts,
        )
        pad_id = self.tokenizer.pad_id if self.tokenizer is not None else 0
        for j, group in enumerate(groups):
            # the DataLoader interleaves workers round-robin, so this batch is at most number
            # j * num_workers + worker of the epoch: below `start` it is skipped without decoding
            if j * num_workers + worker < self.start:
                decoded = []
            else:
                decoded = decode_samples(group, cfg.sample_rate, self.tokenizer, cfg.duration_tolerance, counts,
                                         cfg.min_audio_seconds)
            yield True, collate(decoded, pad_id, *_since(counts, sent))
            sent = dataclasses.replace(counts)
        if counts != sent:
            yield False, empty_batch(*_since(counts, sent))


def _since(counts: Counts, sent: Counts) -> tuple[int, int, int]:
    """(skipped, dropped, oov) counted since `sent`."""
    return counts.skipped - sent.skipped, counts.dropped - sent.dropped, counts.oov - sent.oov


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode in parallel; intra-op threads would oversubscribe the cores


def _identity(item):
    return item


class StreamingLoader:
    """Iterable of Batch over shards or a manifest for one rank; call set_epoch before each epoch.

    `skipped` (faulty samples; `skipped_oov` of them for text outside the vocabulary) and
    `dropped` (duration filter, drop_last) count the current pass over the data and are
    reset when a new pass starts. `position` is
    the number of batches of the epoch's order consumed so far (batches whose samples
    all failed count too, though they are not yielded): store it with a checkpoint and
    resume with `iter_from(position)`.
    """

    def __init__(self, source: Source, config: LoaderConfig | None = None, *, tokenizer: CharTokenizer | None = None,
                 rank: int | None = None, world_size: int | None = None):
        self.config = config or LoaderConfig()
        self.tokenizer = tokenizer
        self.source = resolve_source(source)
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.epoch = 0
        self.skipped = 0
        self.skipped_oov = 0
        self.dropped = 0
        self.position = 0
        self._check_split()

    def _check_split(self) -> None:
        cfg, src = self.config, self.source
        if not cfg.batch_seconds > 0 or cfg.bucket_buffer < 1 or (cfg.max_batch_size is not None and cfg.max_batch_size < 1):
            raise AsrError(f"loader: batch_seconds, bucket_buffer and max_batch_size must be positive ({cfg})")
        if any(not 0.5 <= f <= 2.0 for f in cfg.speed_perturb):
            raise AsrError(f"loader: speed_perturb factors must lie in [0.5, 2], got {list(cfg.speed_perturb)}")
        if cfg.num_workers < 0 or cfg.prefetch_factor < 1 or cfg.shuffle_buffer < 0 or cfg.sample_rate <= 0:
            raise AsrError(f"loader: num_workers and shuffle_buffer must be >= 0, prefetch_factor >= 1 and "
                           f"sample_rate > 0, got {cfg.num_workers}, {cfg.shuffle_buffer}, {cfg.prefetch_factor} "
                           f"and {cfg.sample_rate}")
        for name in ("duration_tolerance", "min_audio_seconds", "min_duration", "max_duration"):
            value = getattr(cfg, name)
            if value is not None and not 0 <= value < math.inf:
                raise AsrError(f"loader: {name} must be a finite number of seconds >= 0 or null, got {value}")
        units, what = (len(src.utterances), "utterances") if src.is_manifest else (len(src.shards), "shards")
        if units == 0:
            raise AsrError(f"{src.name}: no {what} to read (empty {'manifest' if src.is_manifest else 'shard list'})")
        if units < self.world_size:
            raise AsrError(f"{src.name}: {units} {what} cannot feed {self.world_size} ranks; write more, smaller shards")
        mine = len(range(self.rank, units, self.world_size))
        if not src.is_manifest and mine < cfg.num_workers:
            log.warning("%s: rank %d has %d shards for %d workers; %d workers stay idle",
                        src.name, self.rank, mine, cfg.num_workers, cfg.num_workers - mine)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next pass follows."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def iter_from(self, batch_index: int) -> Iterator[Batch]:
        """The current epoch's batches from number `batch_index` on (0-based), e.g. to resume."""
        cfg = self.config
        stream = _EpochStream(self.source, cfg, self.tokenizer, self.rank, self.world_size, self.epoch, batch_index)
        loader = DataLoader(
            stream,
            batch_size=None,
            collate_fn=_identity,
            num_workers=cfg.num_workers,
            pin_memory=cfg.pin_memory,
            worker_init_fn=_worker_init if cfg.num_workers else None,
            prefetch_factor=cfg.prefetch_factor if cfg.num_workers else None,
            # Its own generator: a DataLoader draws its base seed from the global torch RNG
            # otherwise, and training must find that RNG exactly as a checkpoint left it.
            generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.epoch),
        )
        self.skipped = self.skipped_oov = self.dropped = 0
        self.position = index = 0
        for formed, batch in loader:
            self.skipped += batch.skipped
            self.skipped_oov += batch.oov
            self.dropped += batch.dropped
            if not formed:
                continue
            index += 1
            if index > batch_index:
                self.position = index
                if len(batch):
                    yield batch

    def skip_summary(self) -> str:
        """What the last pass skipped and dropped, in words, e.g. for the trainer's end-of-run warning."""
        audio = self.skipped - self.skipped_oov
        return (f"skipped {self.skipped} samples ({audio} with unreadable, too short or mislabelled audio, "
                f"{self.skipped_oov} with text outside the vocabulary) and dropped {self.dropped} utterances "
                "outside the duration limits")


def make_loader(
    source: Source,
    config: LoaderConfig | None = None,
    *,
    tokenizer: CharTokenizer | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    **options,
) -> StreamingLoader:
    """A StreamingLoader over `source` (see asr.data.sources); `options` override LoaderConfig fields.

    >>> make_loader("shards/train.index.jsonl", batch_seconds=120, num_workers=2)  # doctest: +SKIP
    """
    config = dataclasses.replace(config or LoaderConfig(), **options)
    return StreamingLoader(source, config, tokenizer=tokenizer, rank=rank, world_size=world_size)
