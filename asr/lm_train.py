"""Training of the character RNN language model (`asr train-lm`).

Text files hold one sentence per line (a `.jsonl` manifest gives its "text"
fields). Lines are normalised like the recognizer's transcripts and turned into
ids with its vocabulary; a line with characters outside the vocabulary is
skipped (and counted), a line longer than `max_chars` is cut into pieces. A
fixed, seeded share of the lines is held out to report perplexity per
character ([EOS] included), and the model with the best held-out perplexity is
written with `asr.checkpoint.save_checkpoint`, readable by `load_lm`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

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
    epochs: int = 5  # passes over the training lines
    batch_size: int = 64  # lines per update
    lr: float = 2e-3  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # max global gradient norm (0 = none)
    dev_fraction: float = 0.05  # share of lines held out for perplexity (at least one when > 0)
    max_chars: int = 400  # longer lines are cut into pieces of this many characters
    seed: int = 0  # line split, batch order, initialisation, dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 100  # updates between progress log lines

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.max_chars < 1 or self.lr <= 0:
            raise ValueError(f"epochs, batch_size, max_chars and lr must be positive, got {self}")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in [0, 1), got {self.dev_fraction}")


def read_sentences(paths: list[str | Path], tokenizer: CharTokenizer, max_chars: int) -> list[list[int]]:
    """Token ids of every usable line of the text files (see the module docstring)."""
    sentences: list[list[int]] = []
    skipped, first_bad = 0, None
    for path in map(Path, paths):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise LMDataError(f"{path}: cannot read text: {err}") from None
        for no, line in enumerate(lines, 1):
            if path.suffix == ".jsonl":
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
            sentences += [ids[i : i + max_chars] for i in range(0, len(ids), max_chars)]
    if skipped:
        log.warning("skipped %d lines with characters outside the vocabulary (first: %s)", skipped, first_bad)
    sentences = [s for s in sentences if s]
    if not sentences:
        raise LMDataError(f"no usable line in {', '.join(map(str, paths))}")
    return sentences


def _batches(sentences: list[list[int]], batch_size: int, rng: random.Random | None) -> list[list[list[int]]]:
    """Batches of similar lengths (little padding), in random order when `rng` is given."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    batches = [[sentences[i] for i in order[j : j + batch_size]] for j in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def _pad(batch: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, U) ids padded with 0 and (B,) lengths."""
    lengths = torch.tensor([len(s) for s in batch])
    tokens = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(batch):
        tokens[i, : len(s)] = torch.tensor(s)
    return tokens.to(device), lengths.to(device)


@torch.no_grad()
def perplexity(lm: CharLM, sentences: list[list[int]], batch_size: int = 64) -> float:
    """exp(mean negative log-likelihood per predicted token) of `sentences`, [EOS] included."""
    was_training = lm.training
    lm.eval()
    device = lm.output.weight.device
    nll, count = 0.0, 0
    for batch in _batches(sentences, batch_size, None):
        loss, n = lm.loss(*_pad(batch, device))
        nll, count = nll + float(loss), count + int(n)
    lm.train(was_training)
    return math.exp(nll / max(count, 1))


def train_lm(cfg: LMConfig, texts: list[str | Path], vocab: str | Path, out: str | Path) -> dict:
    """Train a CharLM on `texts` with the vocabulary file `vocab`, write it to `out`; returns a summary
    {"train_lines", "dev_lines", "dev_perplexity", "uniform_perplexity", "epochs", "seconds"}."""
    t0 = time.perf_counter()
    tokenizer = CharTokenizer.load(vocab, normalizer=cfg.text)
    sentences = read_sentences(list(texts), tokenizer, cfg.max_chars)
    rng = random.Random(cfg.seed)
    rng.shuffle(sentences)
    n_dev = max(1, round(cfg.dev_fraction * len(sentences))) if cfg.dev_fraction > 0 and len(sentences) > 1 else 0
    dev, train = sentences[:n_dev], sentences[n_dev:]
    held_out = dev or train  # without held-out lines, perplexity is measured on the training lines
    log.info("%d training lines, %d held out, vocabulary of %d", len(train), len(dev), len(tokenizer))

    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    lm = CharLM(cfg.model, len(tokenizer), go_id=tokenizer.go_id, eos_id=tokenizer.eos_id,
                pad_id=tokenizer.pad_id).to(device)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best_ppl, best_state, step = math.inf, None, 0
    for epoch in range(cfg.epochs):
        lm.train()
        for batch in _batches(train, cfg.batch_size, rng):
            loss, n = lm.loss(*_pad(batch, device))
            optimizer.zero_grad(set_to_none=True)
            (loss / n).backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(lm.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            if cfg.log_every and step % cfg.log_every == 0:
                log.info("epoch %d step %d train perplexity %.3f", epoch + 1, step, math.exp(float(loss.detach() / n)))
        ppl = perplexity(lm, held_out, cfg.batch_size)
        log.info("epoch %d: held-out perplexity %.3f", epoch + 1, ppl)
        if ppl < best_ppl:
            best_ppl = ppl
            best_state = {k: v.detach().cpu().clone() for k, v in lm.state_dict().items()}
    summary = {"train_lines": len(train), "dev_lines": len(dev), "dev_perplexity": round(best_ppl, 4),
               "uniform_perplexity": len(tokenizer), "epochs": cfg.epochs, "updates": step,
               "seconds": round(time.perf_counter() - t0, 2)}
    save_checkpoint({"kind": "char_lm", "config": to_dict(cfg), "vocab": tokenizer.symbols,
                     "ids": {"go": tokenizer.go_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id},
                     "model": best_state, "train_state": summary}, out)
    return summary
