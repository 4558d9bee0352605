"""Listen, Attend and Spell: front-end + listener + speller (+ optional CTC head) and the training loss.

loss = (1 - a) * attention cross-entropy + a * CTC, a = ctc_weight.

Both terms are normalised PER TOKEN, so the loss does not depend on batch
size or utterance length and reads as nats per character: the attention term
is averaged over every target token plus the [EOS] step of each utterance
(padding ignored, label smoothing spreads its mass uniformly over all classes);
the CTC term is its summed negative log-likelihood divided by the number of
target tokens. The CTC loss is computed only when ctc_weight > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr.errors import AsrError
from asr.models.ctc import CTCHead
from asr.models.listener import Listener, ListenerConfig
from asr.models.speller import Speller, SpellerConfig


class TargetError(AsrError):
    """Target token ids or lengths that do not fit the model."""


@dataclass(frozen=True)
class LASConfig:
    """The whole network: listener, speller (with its attention) and the loss mix."""

    listener: ListenerConfig = field(default_factory=ListenerConfig)  # encoder
    speller: SpellerConfig = field(default_factory=SpellerConfig)  # decoder and attention
    ctc_weight: float = 0.3  # a in (1 - a) * attention + a * CTC; 0 = no CTC head
    label_smoothing: float = 0.1  # attention cross-entropy label smoothing

    def __post_init__(self) -> None:
        if not 0.0 <= self.ctc_weight <= 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"model: ctc_weight must be in [0, 1] and label_smoothing in [0, 1), got {self}")


class LAS(nn.Module):
    """Attention encoder-decoder built from injected parts.

    frontend maps (waves (B, N), wave_lengths) -> (feats (B, T, F), frame_lengths); when None the
    model's inputs are already features. Token ids: `go_id` starts decoding, `eos_id` ends it,
    `pad_id` pads target batches (targets never contain [GO]/[EOS]).
    """

    def __init__(self, frontend: nn.Module | None, listener: Listener, speller: Speller, ctc: CTCHead | None, *,
                 go_id: int = 1, eos_id: int = 2, pad_id: int = 0, ctc_weight: float = 0.0,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if ctc_weight > 0 and ctc is None:
            raise ValueError("LAS: ctc_weight > 0 needs a CTC head")
        self.frontend = frontend
        self.listener = listener
        self.speller = speller
        self.ctc = ctc
        self.go_id, self.eos_id, self.pad_id = go_id, eos_id, pad_id
        self.ctc_weight = ctc_weight
        self.label_smoothing = label_smoothing

    @property
    def vocab_size(self) -> int:
        """Output classes V."""
        return self.speller.cfg.vocab_size

    def encode_features(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Listener over features (B, T, F) -> encodings (B, T', D), lengths (B,)."""
        return self.listener(feats.to(self.decoding_dtype), lengths)

    @property
    def decoding_dtype(self) -> torch.dtype:
        """Floating type of the listener, speller and CTC head (float32 unless `set_decoding_dtype`)."""
        return next(self.listener.parameters()).dtype

    def set_decoding_dtype(self, dtype: torch.dtype) -> LAS:
        """Listener, speller and CTC head in `dtype` for decoding (bfloat16: about 4x faster matrix
        products on CPUs with bf16 instructions and on GPUs). The front-end stays float32 (log-mel
        features need its precision) and scores stay float32 (log-softmax, CTC, search)."""
        for part in (self.listener, self.speller, self.ctc):
            if part is not None:
                part.to(dtype)
        return self

    def encode(self, waves: Tensor, wave_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Front-end (when present) then listener: (B, N) waves -> (B, T', D), (B,) lengths."""
        if self.frontend is not None:
            waves, wave_lengths = self.frontend(waves, wave_lengths)
        return self.encode_features(waves, wave_lengths)

    def forward(self, waves: Tensor, wave_lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> dict:
        """Training loss of a batch; targets (B, U) padded with pad_id, without [GO]/[EOS].

        Returns {"loss", "att_loss", "ctc_loss" (None when ctc_weight is 0), "accuracy"
        (attention argmax over tokens + [EOS]), "tokens" (their count)}.
        """
        enc, enc_lengths = self.encode(waves, wave_lengths)
        return self.loss(enc, enc_lengths, targets, target_lengths)

    def forward_features(self, feats: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> dict:
        """`forward` for feature inputs (B, T, F), skipping the front-end."""
        enc, enc_lengths = self.encode_features(feats, lengths)
        return self.loss(enc, enc_lengths, targets, target_lengths)

    def teacher_inputs(self, targets: Tensor, target_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Decoder inputs [GO] y (B, U+1), outputs y [EOS] (B, U+1) and their validity mask (B, U+1)."""
        b = targets.shape[0]
        target_lengths = target_lengths.to(targets.device)
        go = targets.new_full((b, 1), self.go_id)
        tokens_in = torch.cat([go, targets], dim=1)
        tokens_out = torch.cat([targets, targets.new_full((b, 1), self.pad_id)], dim=1)
        tokens_out = tokens_out.scatter(1, target_lengths.unsqueeze(1), self.eos_id)
        valid = torch.arange(tokens_out.shape[1], device=targets.device) <= target_lengths.unsqueeze(1)
        return tokens_in, tokens_out, valid

    def loss(self, enc: Tensor, enc_lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> dict:
        """Losses from encodings (B, T, D); see `forward`."""
        targets = self._checked_targets(targets, target_lengths)
        tokens_in, tokens_out, valid = self.teacher_inputs(targets, target_lengths)
        logits, _ = self.speller(enc, enc_lengths, tokens_in)  # (B, U+1, V)
        n_tokens = valid.sum()
        gold = tokens_out.masked_fill(~valid, -100)
        att_loss = F.cross_entropy(logits.flatten(0, 1).float(), gold.flatten(), ignore_index=-100,
                                   label_smoothing=self.label_smoothing, reduction="sum") / n_tokens
        with torch.no_grad():
            accuracy = ((logits.argmax(dim=-1) == tokens_out) & valid).sum() / n_tokens
        ctc_loss = None
        loss = att_loss
        if self.ctc is not None and self.ctc_weight > 0:
            ctc_loss = self.ctc.loss(enc, enc_lengths, targets, target_lengths, reduction="token")
            loss = (1.0 - self.ctc_weight) * att_loss + self.ctc_weight * ctc_loss
        return {"loss": loss, "att_loss": att_loss, "ctc_loss": ctc_loss, "accuracy": accuracy, "tokens": n_tokens}

    def _checked_targets(self, targets: Tensor, target_lengths: Tensor) -> Tensor:
        """Targets cut to the longest length; raises TargetError for ids or lengths that do not fit."""
        if targets.dim() != 2 or target_lengths.shape != targets.shape[:1]:
            raise TargetError(f"targets must be (B, U) with (B,) lengths, got {tuple(targets.shape)} "
                              f"and {tuple(target_lengths.shape)}")
        if targets.shape[0] == 0:
            raise TargetError("empty batch")
        lo_len, hi_len = (int(v) for v in torch.aminmax(target_lengths))
        if lo_len < 0 or hi_len > targets.shape[1]:
            raise TargetError(f"target lengths must be in [0, {targets.shape[1]}], got {lo_len}..{hi_len}")
        if targets.numel():
            lo_id, hi_id = (int(v) for v in torch.aminmax(targets))
            if lo_id < 0 or hi_id >= self.vocab_size:
                raise TargetError(f"target ids must be in [0, {self.vocab_size}), got {lo_id}..{hi_id}")
        return targets[:, :hi_len]


def build_las(cfg: LASConfig, vocab_size: int, frontend: nn.Module | None = None, *, input_dim: int | None = None,
              blank_id: int = 0, go_id: int = 1, eos_id: int = 2, pad_id: int = 0) -> LAS:
    """LAS from its config; input_dim = feature size (default: frontend.output_dim, else cfg.listener.input_dim)."""
    if input_dim is None:
        input_dim = getattr(frontend, "output_dim", None) or cfg.listener.input_dim
    if cfg.listener.input_dim not in (0, input_dim):
        raise ValueError(f"model.listener.input_dim is {cfg.listener.input_dim} but the features have {input_dim}")
    if cfg.speller.vocab_size not in (0, vocab_size):
        raise ValueError(f"model.speller.vocab_size is {cfg.speller.vocab_size} but the vocabulary has {vocab_size}")
    listener = Listener(replace(cfg.listener, input_dim=input_dim))
    speller = Speller(replace(cfg.speller, vocab_size=vocab_size), listener.output_dim)
    ctc = CTCHead(listener.output_dim, vocab_size, blank_id=blank_id) if cfg.ctc_weight > 0 else None
    return LAS(frontend, listener, speller, ctc, go_id=go_id, eos_id=eos_id, pad_id=pad_id,
               ctc_weight=cfg.ctc_weight, label_smoothing=cfg.label_smoothing)
