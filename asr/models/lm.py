"""Character RNN language model for shallow fusion in beam search.

Embedding -> stacked LSTM -> Linear over the same character vocabulary as the
recognizer (ids from asr.text: [GO] starts a sentence, [EOS] ends it). It
offers the speller's search interface: `init_state(batch)` and
`step(state, tokens) -> (log_probs, state)`, with a state that search reorders
by `index_select`, so decoding adds `lm_weight * log_probs` to its scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from asr.errors import AsrError


class LMError(AsrError):
    """A language-model file that cannot be used."""


@dataclass(frozen=True)
class CharLMConfig:
    """Shape of the character LM."""

    embed_dim: int = 128  # token embedding size
    hidden: int = 512  # LSTM units per layer
    layers: int = 2  # stacked LSTM layers
    dropout: float = 0.1  # dropout on the embedding, between layers and before the output (training only)

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or self.hidden < 1 or self.layers < 1:
            raise ValueError(f"lm: bad sizes in {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lm: dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class LMState:
    """LSTM state of N hypotheses (rows are dimension 1, as nn.LSTM wants)."""

    h: Tensor  # (layers, N, H)
    c: Tensor  # (layers, N, H)

    @property
    def size(self) -> int:
        """Number of hypotheses N."""
        return self.h.shape[1]

    def index_select(self, idx: Tensor) -> LMState:
        """Rows `idx` (reorder, drop or repeat hypotheses)."""
        return LMState(self.h.index_select(1, idx), self.c.index_select(1, idx))


class CharLM(nn.Module):
    """LSTM language model over character ids; see the module docstring.

    >>> lm = CharLM(CharLMConfig(embed_dim=4, hidden=8, layers=1), vocab_size=6).eval()
    >>> log_probs, state = lm.step(lm.init_state(3), torch.tensor([1, 1, 1]))
    >>> tuple(log_probs.shape), state.size
    ((3, 6), 3)
    """

    def __init__(self, cfg: CharLMConfig, vocab_size: int, *, go_id: int = 1, eos_id: int = 2,
                 pad_id: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.go_id, self.eos_id, self.pad_id = go_id, eos_id, pad_id
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
        self.rnn = nn.LSTM(cfg.embed_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                           dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.output = nn.Linear(cfg.hidden, vocab_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.vocab: list[str] | None = None  # symbols in id order, set by load_lm (to check against a model's)

    def check_vocab(self, symbols: list[str]) -> None:
        """Raise LMError unless this LM was trained on the recognizer vocabulary `symbols` (id order)."""
        if len(symbols) != self.vocab_size:
            raise LMError(f"the language model has {self.vocab_size} symbols, the recognizer {len(symbols)}")
        if self.vocab is not None and list(symbols) != self.vocab:
            first = next(i for i, (a, b) in enumerate(zip(self.vocab, symbols)) if a != b)
            raise LMError(f"the language model's vocabulary differs from the recognizer's (id {first}: "
                          f"{self.vocab[first]!r} vs {symbols[first]!r})")

    def init_state(self, batch: int) -> LMState:
        """Zero state of `batch` hypotheses, before [GO] is fed."""
        ref = self.output.weight
        zeros = ref.new_zeros(self.cfg.layers, batch, self.cfg.hidden)
        return LMState(zeros, zeros)

    def forward(self, tokens: Tensor) -> Tensor:
        """Teacher forcing: tokens (B, U) starting with [GO] -> logits of the next token (B, U, V)."""
        out, _ = self.rnn(self.dropout(self.embed(tokens)))  # (B, U, H)
        return self.output(self.dropout(out))

    def step(self, state: LMState, tokens: Tensor) -> tuple[Tensor, LMState]:
        """Feed tokens (N,) -> log-probabilities of the next token (N, V) and the new state."""
        out, (h, c) = self.rnn(self.embed(tokens).unsqueeze(1), (state.h, state.c))  # (N, 1, H)
        return torch.log_softmax(self.output(out.squeeze(1)).float(), dim=-1), LMState(h, c)

    def loss(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Summed negative log-likelihood of sentences (B, U) padded, without [GO]/[EOS], and the
        number of predicted tokens (characters + one [EOS] each)."""
        b = tokens.shape[0]
        lengths = lengths.to(tokens.device)
        tokens_in = torch.cat([tokens.new_full((b, 1), self.go_id), tokens], dim=1)  # (B, U + 1)
        tokens_out = torch.cat([tokens, tokens.new_full((b, 1), self.pad_id)], dim=1)
        tokens_out = tokens_out.scatter(1, lengths.unsqueeze(1), self.eos_id)
        valid = torch.arange(tokens_out.shape[1], device=tokens.device) <= lengths.unsqueeze(1)  # (B, U + 1)
        logits = self(tokens_in)
        nll = nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens_out.masked_fill(~valid, -100).flatten(),
                                          ignore_index=-100, reduction="sum")
        return nll, valid.sum()


def load_lm(path: str | Path, device: str | torch.device = "cpu") -> CharLM:
    """The character LM of a file written by `asr train-lm` (read with weights_only), in eval mode.

    Its vocabulary is in `lm.vocab` (symbols in id order), to check against the recognizer's.
    """
    from asr.checkpoint import load_checkpoint
    from asr.config import ConfigError, from_dict

    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "char_lm":
        raise LMError(f"{path}: not a character LM file (written by `asr train-lm`)")
    try:
        cfg = from_dict(CharLMConfig, ckpt["config"].get("model", {}))
    except ConfigError as err:
        raise LMError(f"{path}: bad LM config: {err}") from None
    vocab = list(ckpt["vocab"])
    ids = ckpt.get("ids", {})
    lm = CharLM(cfg, len(vocab), go_id=ids.get("go", 1), eos_id=ids.get("eos", 2), pad_id=ids.get("pad", 0))
    lm.load_state_dict(ckpt["model"])
    lm.vocab = vocab
    return lm.to(device).eval()
