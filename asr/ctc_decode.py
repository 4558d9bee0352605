"""Decoding with the CTC head alone: greedy (best path) and prefix beam search.

Small-data models often learn the CTC head well before the attention decoder aligns;
these searches read the listener's CTC output without the speller.

Prefix beam search (Hannun et al. 2014, "First-pass large vocabulary continuous speech
recognition using bi-directional recurrent DNNs") keeps, for each distinct label prefix h,
the log-probabilities that frames 0..t emit exactly h ending in a blank (p_b) or in its
last label (p_nb). One frame extends each prefix by a blank, by its last label again
(which merges into h unless a blank came between) or by a new label c, and keeps the
`beam` best prefixes by

    log(p_b + p_nb) + lm_weight * log P_lm(h) + length_bonus * |h|

where P_lm(h) includes a character LM's probability of each label of h. At the end the
LM's [EOS] probability is added. Only the `token_beam` most likely labels of each frame
are tried, and frames whose blank probability exceeds `blank_skip` are taken as blank
(both change nothing measurable and save most of the work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

NEG_INF = float("-inf")


@dataclass
class CTCHypothesis:
    """One CTC hypothesis: labels, total score and its components."""

    tokens: list[int]  # labels, without blanks or repeats
    score: float  # log P_ctc + lm_weight * log P_lm + length_bonus * len
    ctc: float  # log P_ctc(h): all alignments of h
    lm: float  # log P_lm(h + [EOS]) (0 without an LM)


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank: int) -> list[list[int]]:
    """Best path: the most likely class of each valid frame, repeats merged, blanks removed.

    log_probs (B, T, V), lengths (B,) -> B label lists.
    """
    best = log_probs.argmax(dim=-1).cpu()  # (B, T)
    out = []
    for row, n in zip(best.tolist(), lengths.tolist()):
        labels, prev = [], blank
        for c in row[: int(n)]:
            if c != blank and c != prev:
                labels.append(c)
            prev = c
        out.append(labels)
    return out


def _logadd(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


class _LMCache:
    """Next-label log-probabilities of a character LM for each prefix, computed in batches."""

    def __init__(self, lm: nn.Module, go_id: int) -> None:
        self.lm = lm
        self.rows: dict[tuple[int, ...], int] = {}  # prefix -> row of `states` / `next_lp`
        first_lp, state = lm.step(lm.init_state(1), torch.tensor([go_id], device=self._device()))
        self.states = state
        self.next_lp = [first_lp[0].tolist()]
        self.rows[()] = 0

    def _device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def ensure(self, prefixes: list[tuple[int, ...]]) -> None:
        """Compute the distributions after each prefix not seen yet (their parents must be known)."""
        todo = [p for p in prefixes if p not in self.rows]
        if not todo:
            return
        parents = torch.tensor([self.rows[p[:-1]] for p in todo], device=self._device())
        last = torch.tensor([p[-1] for p in todo], device=self._device())
        lp, state = self.lm.step(self.states.index_select(parents), last)
        base = len(self.next_lp)
        self.next_lp.extend(lp.tolist())
        self.states = type(state)(torch.cat([self.states.h, state.h], dim=1), torch.cat([self.states.c, state.c], dim=1))
        for j, p in enumerate(todo):
            self.rows[p] = base + j

    def logp(self, prefix: tuple[int, ...], label: int) -> float:
        return self.next_lp[self.rows[prefix]][label]


@torch.no_grad()
def ctc_prefix_beam_search(log_probs: Tensor, length: int, *, beam: int, blank: int, lm: nn.Module | None = None,
                           lm_weight: float = 0.0, length_bonus: float = 0.0, go_id: int = 1, eos_id: int = 2,
                           token_beam: int | None = None, blank_skip: float = 0.999, nbest: int = 1,
                           ) -> list[CTCHypothesis]:
    """The `nbest` best prefixes of one utterance's CTC output log_probs (T, V) over its first `length` frames."""
    lp = log_probs[: int(length)].double().cpu()
    V = lp.shape[1]
    k = min(token_beam or V, V)
    use_lm = lm is not None and lm_weight > 0
    cache = _LMCache(lm, go_id) if use_lm else None
    # prefix -> [log p_b, log p_nb, lm sum]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF, 0.0]}
    skip = math.log(blank_skip) if blank_skip < 1 else 0.0
    top_v, top_i = lp.topk(k, dim=1)
    blank_lp = lp[:, blank].tolist()
    for t in range(lp.shape[0]):
        if blank_skip < 1 and blank_lp[t] > skip:
            for entry in beams.values():  # only blank: every prefix ends in a blank now
                entry[0], entry[1] = _logadd(entry[0], entry[1]) + blank_lp[t], NEG_INF
            continue
        if cache is not None:
            cache.ensure(list(beams))
        labels = [(c, v) for c, v in zip(top_i[t].tolist(), top_v[t].tolist()) if c != blank]
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix: tuple[int, ...], pb: float, pnb: float, lm_sum: float) -> None:
            entry = nxt.get(prefix)
            if entry is None:
                nxt[prefix] = [pb, pnb, lm_sum]
            else:
                entry[0], entry[1] = _logadd(entry[0], pb), _logadd(entry[1], pnb)

        for prefix, (pb, pnb, lm_sum) in beams.items():
            total = _logadd(pb, pnb)
            add(prefix, total + blank_lp[t], NEG_INF, lm_sum)  # a blank
            last = prefix[-1] if prefix else None
            for c, v in labels:
                if c == last:
                    add(prefix, NEG_INF, pnb + v, lm_sum)  # the last label again: merges
                    ext = pb + v  # a new copy of it needs a blank in between
                else:
                    ext = total + v
                if ext == NEG_INF:
                    continue
                lm_c = cache.logp(prefix, c) if cache is not None else 0.0
                add(prefix + (c,), NEG_INF, ext, lm_sum + lm_c)

        def rank(item: tuple[tuple[int, ...], list[float]]) -> float:
            prefix, (pb, pnb, lm_sum) = item
            return _logadd(pb, pnb) + lm_weight * lm_sum + length_bonus * len(prefix)

        beams = dict(sorted(nxt.items(), key=rank, reverse=True)[:beam])
    finals = []
    if cache is not None:
        cache.ensure(list(beams))
    for prefix, (pb, pnb, lm_sum) in beams.items():
        ctc = _logadd(pb, pnb)
        lm_total = lm_sum + (cache.logp(prefix, eos_id) if cache is not None else 0.0)
        finals.append(CTCHypothesis(list(prefix), ctc + lm_weight * lm_total + length_bonus * len(prefix), ctc,
                                    lm_total if cache is not None else 0.0))
    finals.sort(key=lambda h: h.score, reverse=True)
    return finals[:nbest]
