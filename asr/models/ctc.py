"""CTC head on the listener output (joint CTC-attention training, Kim et al. 2017).

A Linear layer and a log-softmax over the vocabulary; the CTC blank is class
`blank_id` (0, which also pads target batches).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Reduction = Literal["batch", "token", "sum", "none"]


class CTCHead(nn.Module):
    """Linear(enc_dim -> vocab) + log-softmax, and the CTC loss over it."""

    def __init__(self, enc_dim: int, vocab_size: int, blank_id: int = 0) -> None:
        super().__init__()
        self.proj = nn.Linear(enc_dim, vocab_size)
        self.blank_id = blank_id

    def log_probs(self, enc: Tensor) -> Tensor:
        """Frame log-probabilities (B, T, V), float32 (also under autocast) for decoding and the loss."""
        return torch.log_softmax(self.proj(enc).float(), dim=-1)

    def loss(self, enc: Tensor, enc_lengths: Tensor, targets: Tensor, target_lengths: Tensor,
             reduction: Reduction = "batch") -> Tensor:
        """CTC negative log-likelihood of targets (B, U) padded, without [GO]/[EOS].

        reduction: "batch" = sum / B (per utterance), "token" = sum / total target tokens,
        "sum", or "none" (per utterance, (B,)). Impossible alignments give 0 (zero_infinity).
        """
        lp = self.log_probs(enc).transpose(0, 1)  # (T, B, V) as ctc_loss wants
        per_utt = F.ctc_loss(lp, targets, enc_lengths, target_lengths, blank=self.blank_id,
                             reduction="none", zero_infinity=True)  # (B,)
        if reduction == "none":
            return per_utt
        total = per_utt.sum()
        if reduction == "batch":
            return total / per_utt.shape[0]
        if reduction == "token":
            return total / target_lengths.sum().clamp(min=1)
        return total
