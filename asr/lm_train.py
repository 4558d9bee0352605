"""Training of the character RNN language model (`asr train-lm`).

Text files hold one sentence per line (a `.jsonl` manifest gives its "text"
fields). Lines are normalised like the recognizer's transcripts and turned into
ids with its vocabulary; a line with characters outside the vocabulary is
skipped (and counted), a line longer than `max_chars` is cut into pieces. The
files are read line by line into one flat id tensor (`PackedSentences`), so a
text of tens of megabytes costs about its own size in memory. A fixed, seeded
share of the lines is held out to report perplexity per character ([EOS]
included), and the model with the best held-out perplexity is written with
`asr.checkpoint.save_checkpoint`, readable by `load_lm`.

Training stops after `epochs`, or earlier at the first update boundary past
`max_steps` updates or `max_minutes` of wall-clock time; the held-out
perplexity is measured every `eval_every` updates, at the end of each epoch
and when training stops, so a run that cannot finish one epoch of a large text
still keeps its best model.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from asr.checkpoint import save_checkpoint
from asr.config import to_dict
from asr.distributed import resolve_device
from asr.errors import AsrError
from asr.models.lm import CharLM, CharLMConfig
from asr.text import CharTokenizer, NormalizerConfig, OOVError

log = logging.getLogger(__name__)


class LMDataError(AsrError):
    """Text for the language model that cannot be read or holds no usable line."""


@dataclass(frozen=True)
class LMConfig:
    """Everything `asr train-lm` needs (values only; stored in the LM file)."""

    model: CharLMConfig = field(default_factory=CharLMConfig)  # network shape
    text: NormalizerConfig = field(default_factory=NormalizerConfig)  # normalisation, as for the recognizer
    epochs: int = 5  # passes over the training lines (at most)
    batch_size: int = 64  # lines per update
    lr: float = 2e-3  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # max global gradient norm (0 = none)
    dev_fraction: float = 0.05  # share of lines held out for perplexity (at least one when > 0)
    max_chars: int = 400  # longer lines are cut into pieces of this many characters
    seed: int = 0  # line split, batch order, initialisation, dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 100  # updates between progress log lines
    max_steps: int = 0  # stop after this many updates (0 = no limit)
    max_minutes: float = 0.0  # stop at the first update past this many minutes, reading included (0 = none)
    eval_every: int = 0  # updates between held-out evaluations (0 = at the end of each epoch and at the stop only)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.max_chars < 1 or self.lr <= 0:
            raise ValueError(f"epochs, batch_size, max_chars and lr must be positive, got {self}")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in [0, 1), got {self.dev_fraction}")
        if self.max_steps < 0 or self.max_minutes < 0 or self.eval_every < 0:
            raise ValueError(f"max_steps, max_minutes and eval_every must be >= 0 (0 = off), got {self}")


@dataclass(frozen=True)
class PackedSentences:
    """Sentences of token ids in one flat tensor: sentence i is ids[starts[i] : starts[i] + lengths[i]].

    A subset (`select`) shares `ids`, so the held-out and training lines cost no copy of the text.

    >>> packed = PackedSentences.from_lists([[4, 5, 6], [7]])
    >>> len(packed), packed[0], packed.select(torch.tensor([1])).to_lists()
    (2, [4, 5, 6], [[7]])
    """

    ids: Tensor  # (T,) every sentence's ids one after the other (uint8, or int32 for large vocabularies)
    starts: Tensor  # (N,) int64 offset of each sentence in `ids`
    lengths: Tensor  # (N,) int64 ids per sentence (> 0)

    @classmethod
    def from_lists(cls, sentences: Sequence[Sequence[int]]) -> PackedSentences:
        """Pack lists of ids (int32 storage)."""
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        starts = torch.cumsum(lengths, 0) - lengths
        ids = torch.tensor([i for s in sentences for i in s], dtype=torch.int32)
        return cls(ids, starts, lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> list[int]:
        start = int(self.starts[i])
        return self.ids[start : start + int(self.lengths[i])].tolist()

    def to_lists(self) -> list[list[int]]:
        """Every sentence as a list of ids (small texts and tests only)."""
        return [self[i] for i in range(len(self))]

    def select(self, idx: Tensor) -> PackedSentences:
        """Sentences `idx` (N',) in that order, sharing the id storage."""
        return PackedSentences(self.ids, self.starts[idx], self.lengths[idx])

    def pad(self, idx: Tensor, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Sentences `idx` (B,) as (B, U) ids padded with 0 and (B,) lengths, on `device`."""
        starts, lengths = self.starts[idx], self.lengths[idx]
        steps = torch.arange(int(lengths.max()))  # (U,)
        valid = steps < lengths.unsqueeze(1)  # (B, U)
        positions = (starts.unsqueeze(1) + steps).masked_fill(~valid, 0)  # (B, U)
        tokens = self.ids[positions].long().masked_fill(~valid, 0)
        return tokens.to(device), lengths.to(device)


def _encoded_lines(paths: Sequence[Path], tokenizer: CharTokenizer, max_chars: int, bar=None) -> Iterator[list[int]]:
    """Ids of every usable line (pieces of at most `max_chars`), file by file, read line by line.

    Lines are the pieces `str.splitlines` makes of the whole file. OOV lines are skipped and
    logged once at the end.
    """
    skipped, first_bad = 0, None
    for path in paths:
        jsonl = path.suffix == ".jsonl"
        no = 0
        try:
            with open(path, "rb") as f:
                for raw in f:
                    if bar is not None:
                        bar.update(len(raw))
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise LMDataError(f"{path}:{no + 1}: not UTF-8 text: {err}") from None
                    for line in text.splitlines():
                        no += 1
                        if jsonl:
                            try:
                                line = json.loads(line)["text"] if line.strip() else ""
                            except (ValueError, KeyError, TypeError):
                                raise LMDataError(f"{path}:{no}: not a manifest line with a 'text' field") from None
                        try:
                            ids = tokenizer.encode(line, utt_id=f"{path}:{no}")
                        except OOVError as err:
                            skipped += 1
                            first_bad = first_bad or str(err)
                            continue
                        for i in range(0, len(ids), max_chars):
                            yield ids[i : i + max_chars]
        except OSError as err:
            raise LMDataError(f"{path}: cannot read text: {err}") from None
    if skipped:
        log.warning("skipped %d lines with characters outside the vocabulary (first: %s)", skipped, first_bad)


def read_sentences(paths: list[str | Path], tokenizer: CharTokenizer, max_chars: int) -> list[list[int]]:
    """Token ids of every usable line of the text files, as lists (see the module docstring)."""
    sentences = list(_encoded_lines([Path(p) for p in paths], tokenizer, max_chars))
    if not sentences:
        raise LMDataError(f"no usable line in {', '.join(map(str, paths))}")
    return sentences


def read_corpus(paths: Sequence[str | Path], tokenizer: CharTokenizer, max_chars: int,
                progress: bool = False) -> PackedSentences:
    """The lines of `read_sentences`, packed without a Python list per line (bounded memory)."""
    paths = [Path(p) for p in paths]
    total = sum(p.stat().st_size for p in paths if p.is_file())
    typecode, dtype = ("B", torch.uint8) if len(tokenizer) <= 256 else ("i", torch.int32)
    ids, lengths = array(typecode), array("q")
    with tqdm(total=total, unit="B", unit_scale=True, desc="read text", file=sys.stderr, disable=not progress,
              dynamic_ncols=True) as bar:
        for piece in _encoded_lines(paths, tokenizer, max_chars, bar):
            ids.extend(piece)
            lengths.append(len(piece))
    if not lengths:
        raise LMDataError(f"no usable line in {', '.join(map(str, paths))}")
    lengths_t = torch.frombuffer(lengths, dtype=torch.int64).clone()
    return PackedSentences(torch.frombuffer(ids, dtype=dtype).clone(), torch.cumsum(lengths_t, 0) - lengths_t,
                           lengths_t)


def _batches(sentences: PackedSentences, batch_size: int, rng: random.Random | None) -> list[Tensor]:
    """Index batches of similar lengths (little padding), in random order when `rng` is given."""
    order = torch.sort(sentences.lengths, stable=True).indices
    batches = list(order.split(batch_size))
    if rng is not None:
        rng.shuffle(batches)
    return batches


@torch.no_grad()
def perplexity(lm: CharLM, sentences: PackedSentences | list[list[int]], batch_size: int = 64) -> float:
    """exp(mean negative log-likelihood per predicted token) of `sentences`, [EOS] included."""
    if not isinstance(sentences, PackedSentences):
        sentences = PackedSentences.from_lists(sentences)
    was_training = lm.training
    lm.eval()
    device = lm.output.weight.device
    nll, count = 0.0, 0
    for batch in _batches(sentences, batch_size, None):
        loss, n = lm.loss(*sentences.pad(batch, device))
        nll, count = nll + float(loss), count + int(n)
    lm.train(was_training)
    return math.exp(nll / max(count, 1))


def _split(sentences: PackedSentences, dev_fraction: float,
           rng: random.Random) -> tuple[PackedSentences, PackedSentences]:
    """(held-out, training) lines: a seeded shuffle, the first `dev_fraction` held out (at least one)."""
    order = list(range(len(sentences)))
    rng.shuffle(order)  # the permutation that shuffling a list of the lines gives
    n_dev = max(1, round(dev_fraction * len(order))) if dev_fraction > 0 and len(order) > 1 else 0
    order_t = torch.tensor(order, dtype=torch.long)
    return sentences.select(order_t[:n_dev]), sentences.select(order_t[n_dev:])


@dataclass
class _Best:
    """The best model by held-out perplexity so far (its weights on the CPU) and the last measurement."""

    perplexity: float = math.inf  # best held-out perplexity
    update: int = 0  # update at which it was measured
    state: dict | None = None  # the model's state_dict then
    last: float = math.inf  # latest held-out perplexity
    evaluated_at: int = -1  # update of the latest measurement

    def evaluate(self, lm: CharLM, held_out: PackedSentences, batch_size: int, step: int, bar) -> None:
        """Measure the held-out perplexity after `step` updates and keep the weights if it is the best."""
        self.last, self.evaluated_at = perplexity(lm, held_out, batch_size), step
        log.debug("update %d: held-out perplexity %.6f", step, self.last)
        bar.set_postfix(dev_ppl=f"{self.last:.3f}", refresh=False)
        if self.last < self.perplexity or self.state is None:  # a diverged run still writes a model
            self.perplexity, self.update = self.last, step
            self.state = {k: v.detach().cpu().clone() for k, v in lm.state_dict().items()}


def train_lm(cfg: LMConfig, texts: list[str | Path], vocab: str | Path, out: str | Path, *,
             eval_texts: Sequence[str | Path] = (), progress: bool = False) -> dict:
    """Train a CharLM on `texts` with the vocabulary file `vocab`, write it to `out`; returns a summary
    {"train_lines", "dev_lines", "dev_perplexity", "uniform_perplexity", "epochs", "updates", "best_update",
    "stopped", "seconds"}, plus "eval_lines" and "eval_perplexity" (of the written model) for `eval_texts`.
    `progress` shows bars on stderr."""
    t0 = time.perf_counter()
    deadline = t0 + 60 * cfg.max_minutes if cfg.max_minutes > 0 else math.inf
    tokenizer = CharTokenizer.load(vocab, normalizer=cfg.text)
    extra = read_corpus(list(eval_texts), tokenizer, cfg.max_chars) if eval_texts else None  # small: fail early
    sentences = read_corpus(list(texts), tokenizer, cfg.max_chars, progress=progress)
    rng = random.Random(cfg.seed)
    dev, train = _split(sentences, cfg.dev_fraction, rng)
    held_out = dev if len(dev) else train  # without held-out lines, perplexity is measured on the training lines
    log.info("%d training lines (%d characters), %d held out, vocabulary of %d", len(train),
             int(train.lengths.sum()), len(dev), len(tokenizer))

    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    lm = CharLM(cfg.model, len(tokenizer), go_id=tokenizer.go_id, eos_id=tokenizer.eos_id,
                pad_id=tokenizer.pad_id).to(device)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    best = _Best()
    step, stopped = 0, "epochs"
    with tqdm(total=min(cfg.epochs * per_epoch, cfg.max_steps or math.inf), unit="step", desc="train-lm",
              file=sys.stderr, disable=not progress, dynamic_ncols=True) as bar:
        for epoch in range(cfg.epochs):
            lm.train()
            for batch in _batches(train, cfg.batch_size, rng):
                loss, n = lm.loss(*train.pad(batch, device))
                optimizer.zero_grad(set_to_none=True)
                (loss / n).backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(lm.parameters(), cfg.grad_clip)
                optimizer.step()
                step += 1
                bar.update(1)
                if cfg.log_every and step % cfg.log_every == 0:
                    log.info("epoch %d step %d train perplexity %.3f", epoch + 1, step,
                             math.exp(float(loss.detach() / n)))
                if cfg.eval_every and step % cfg.eval_every == 0:
                    best.evaluate(lm, held_out, cfg.batch_size, step, bar)
                # Budgets are checked between updates, so the model written is always a whole update's.
                if cfg.max_steps and step >= cfg.max_steps:
                    stopped = "max_steps"
                elif time.perf_counter() >= deadline:
                    stopped = "max_minutes"
                if stopped != "epochs":
                    break
            if best.evaluated_at != step:
                best.evaluate(lm, held_out, cfg.batch_size, step, bar)
            log.info("epoch %.2f (update %d): held-out perplexity %.3f", step / per_epoch, step, best.last)
            if stopped != "epochs":
                log.info("stopped at update %d: %s reached", step, stopped)
                break

    summary = {"train_lines": len(train), "dev_lines": len(dev), "dev_perplexity": round(best.perplexity, 4),
               "uniform_perplexity": len(tokenizer), "epochs": round(step / per_epoch, 3), "updates": step,
               "best_update": best.update, "stopped": stopped}
    if extra is not None:
        lm.load_state_dict(best.state)
        summary.update(eval_texts=[str(p) for p in eval_texts], eval_lines=len(extra),
                       eval_perplexity=round(perplexity(lm, extra, cfg.batch_size), 4))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    save_checkpoint({"kind": "char_lm", "config": to_dict(cfg), "vocab": tokenizer.symbols,
                     "ids": {"go": tokenizer.go_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id},
                     "model": best.state, "train_state": summary}, out)
    return summary
