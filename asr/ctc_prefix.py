"""CTC prefix scores (Watanabe et al. 2017) for joint CTC/attention beam search.

For a hypothesis prefix h, frames t = 0..T-1 and CTC log-probabilities x_t(k):

    r^n_t(h), r^b_t(h)  log-probability that frames 0..t emit exactly h, the last frame
                        being a non-blank / a blank
    phi_t(h, c)         r^b_t(h) if c == last(h), else logaddexp(r^n_t(h), r^b_t(h))
    psi(h + c)          logsumexp_t [phi_{t-1}(h, c) + x_t(c)]: log-probability that the CTC
                        output STARTS with h + c (the prefix score)
    psi(h + [EOS])      logaddexp(r^n_{T-1}(h), r^b_{T-1}(h)): log-probability that the CTC
                        output IS h (so the score of a finished hypothesis is -ctc_loss)

with r^b_{-1}(empty) = 0 (log 1) and every other r_{-1} = -inf. The recursions

    r^n_t(h + c) = logaddexp(r^n_{t-1}(h + c), phi_{t-1}(h, c)) + x_t(c)
    r^b_t(h + c) = logaddexp(r^n_{t-1}(h + c), r^b_{t-1}(h + c)) + x_t(blank)

are first-order LINEAR recurrences in probability space, so instead of ESPnet's
loop over frames (CTCPrefixScoreTH) they are solved in closed form with
cumulative sums over time:

    r^n_t = X_t + logcumsumexp_{s <= t}(phi_{s-1} - X_{s-1}),  X_t = sum_{u <= t} x_u(c)

(and the same for r^b with the blank), a handful of tensor operations per
decoder step whatever T is. Everything runs in float64, where the cumulative
sums keep their precision. Prefix scores (psi) are computed for every
(hypothesis, candidate token) pair given; the full recursion only for the
hypotheses the search keeps (`extend`). Frames past an utterance's length do
not count: psi sums only valid frames and [EOS] reads r at the last valid one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NEG_INF = float("-inf")
LOG_FLOOR = -1.0e4  # CTC log-probabilities are clamped here, so the cumulative sums never meet -inf


@dataclass(frozen=True)
class CTCPrefixState:
    """Prefix variables of N hypotheses (rows); slot 0 of the time axis is t = -1."""

    r_n: Tensor  # (N, T + 1) float64: log r^n_t(h), t = -1..T-1
    r_b: Tensor  # (N, T + 1) float64: log r^b_t(h)
    psi: Tensor  # (N,) float64: prefix score of h
    last: Tensor  # (N,) long: last token of h, -1 when h is empty
    utt: Tensor  # (N,) long: row of the scorer's utterance tensors this hypothesis belongs to

    @property
    def size(self) -> int:
        """Number of hypotheses N."""
        return self.psi.shape[0]

    def index_select(self, idx: Tensor) -> CTCPrefixState:
        """Rows `idx` of every field (reorder, drop or repeat hypotheses)."""
        return CTCPrefixState(*(t.index_select(0, idx) for t in (self.r_n, self.r_b, self.psi, self.last, self.utt)))


class CTCPrefixScorer:
    """Prefix scores of candidate tokens from CTC log-probabilities (B, T, V) of a batch of utterances.

    >>> lp = torch.randn(1, 6, 4).log_softmax(-1)
    >>> scorer = CTCPrefixScorer(lp, torch.tensor([6]), blank=0)
    >>> state = scorer.init_state(torch.tensor([0]))
    >>> psi = scorer.score(state, torch.tensor([[1, 2]]))        # log P(output starts with 1), (... 2)
    >>> state = scorer.extend(state, torch.tensor([0]), torch.tensor([1]), psi[:, 0])
    >>> full = scorer.score_eos(state)                            # log P(output is exactly [1])
    >>> loss = torch.nn.functional.ctc_loss(lp.transpose(0, 1), torch.tensor([[1]]), torch.tensor([6]),
    ...                                     torch.tensor([1]), reduction="none")
    >>> bool(torch.allclose(full.float(), -loss, atol=1e-5))
    True
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, *, blank: int = 0) -> None:
        b, t, v = log_probs.shape
        x = log_probs.detach().double().clamp(min=LOG_FLOOR)  # (B, T, V)
        self.blank = blank
        self.lengths = lengths.to(device=x.device, dtype=torch.long)  # (B,)
        valid = torch.arange(t, device=x.device) < self.lengths.unsqueeze(1)  # (B, T)
        # (B, V, T): time last, so one (utterance, token) pair is one contiguous row.
        self.x_valid = x.masked_fill(~valid.unsqueeze(-1), NEG_INF).transpose(1, 2).contiguous()
        # Cumulative sums with a leading 0 for t = -1: cum[b, k, s] = sum_{u < s} x_u(k), (B, V, T + 1).
        self.cum = torch.cat([x.new_zeros(b, 1, v), x.cumsum(dim=1)], dim=1).transpose(1, 2).contiguous()

    @property
    def frames(self) -> int:
        """Padded length T of the time axis."""
        return self.x_valid.shape[-1]

    def init_state(self, utt: Tensor) -> CTCPrefixState:
        """Empty prefixes, one per entry of `utt` (N,) (the utterance row of each hypothesis)."""
        utt = utt.to(device=self.cum.device, dtype=torch.long)
        n = utt.shape[0]
        r_b = self.cum[utt, self.blank]  # (N, T + 1): all-blank paths, log 1 at t = -1
        r_n = torch.full_like(r_b, NEG_INF)
        return CTCPrefixState(r_n=r_n, r_b=r_b, psi=r_b.new_zeros(n), last=utt.new_full((n,), -1), utt=utt)

    def _phi(self, state: CTCPrefixState) -> tuple[Tensor, Tensor]:
        """phi_{t-1} for t = 0..T-1 of a different next token, and of the same token as last(h): (N, T) each."""
        t = self.frames
        return torch.logaddexp(state.r_n[:, :t], state.r_b[:, :t]), state.r_b[:, :t]

    def score(self, state: CTCPrefixState, tokens: Tensor) -> Tensor:
        """Prefix scores psi(h + c) (N, C) float64 of candidate tokens (N, C); the blank scores -inf.

        Tokens must not be [EOS]: its score is `score_eos`.
        """
        phi, phi_same = self._phi(state)  # (N, T)
        x = self.x_valid[state.utt.unsqueeze(1), tokens]  # (N, C, T)
        psi = torch.logsumexp(phi.unsqueeze(1) + x, dim=-1)  # (N, C)
        # Repeating the last token needs a blank in between: only paths ending in a blank count.
        same = tokens == state.last.unsqueeze(1)  # (N, C)
        x_last = self.x_valid[state.utt, state.last.clamp(min=0)]  # (N, T)
        psi_same = torch.logsumexp(phi_same + x_last, dim=-1, keepdim=True)  # (N, 1)
        return torch.where(same, psi_same, psi).masked_fill(tokens == self.blank, NEG_INF)

    def score_eos(self, state: CTCPrefixState) -> Tensor:
        """psi(h + [EOS]) (N,) float64: log-probability that the whole CTC output is h."""
        idx = self.lengths[state.utt].unsqueeze(1)  # slot T_b holds frame T_b - 1
        return torch.logaddexp(state.r_n.gather(1, idx), state.r_b.gather(1, idx)).squeeze(1)

    def extend(self, state: CTCPrefixState, rows: Tensor, tokens: Tensor, psi: Tensor) -> CTCPrefixState:
        """State of hypotheses h_rows + tokens (M,), given their prefix scores psi (M,) from `score`."""
        t = self.frames
        parent = state.index_select(rows)
        phi, phi_same = self._phi(parent)
        phi = torch.where((tokens == parent.last).unsqueeze(1), phi_same, phi)  # (M, T)
        xc = self.cum[parent.utt, tokens]  # (M, T + 1): X_{t} at slot t + 1
        xb = self.cum[parent.utt, self.blank]  # (M, T + 1)
        first = xc.new_full((tokens.shape[0], 1), NEG_INF)  # r_{-1} of a non-empty prefix
        r_n = torch.cat([first, xc[:, 1:] + torch.logcumsumexp(phi - xc[:, :t], dim=1)], dim=1)
        r_b = torch.cat([first, xb[:, 1:] + torch.logcumsumexp(r_n[:, :t] - xb[:, :t], dim=1)], dim=1)
        return CTCPrefixState(r_n=r_n, r_b=r_b, psi=psi.to(r_n.dtype), last=tokens.to(torch.long), utt=parent.utt)
