"""Search over a model's speller: batched greedy decoding and batched beam search.

Search lives outside the model and only uses `model.speller.init_state` /
`model.speller.step`, the model's [GO]/[EOS] ids and, for joint decoding,
`model.ctc.log_probs`, so it works for any decoder offering that interface.

Beam search (`decode`) keeps all B x beam hypotheses in one tensor: one
`speller.step` call per output step for the whole batch, the selection of the
next beam as one `topk` over (beam x V) candidates per utterance, and the
bookkeeping of finished hypotheses as small tensor operations. Scores:

    score(h) = (1 - ctc_weight) * log P_att(h) + ctc_weight * log P_ctc-prefix(h)
               + lm_weight * log P_lm(h) + length_penalty * (|h| + 1)

summed over tokens including [EOS] (ESPnet's joint CTC/attention decoding,
Watanabe et al. 2017, with shallow LM fusion). With `length_normalize`,
finished hypotheses are ranked by score / (|h| + 1) instead.

At each step the best `beam` candidates of an utterance that end with [EOS] are
set aside as finished (as in ESPnet/fairseq: an [EOS] candidate counts only if
it ranks among the best `beam` candidates), and the best `beam` candidates that
do not end continue. At the maximum length only [EOS] may follow, with its
scores (as fairseq does; ESPnet appends [EOS] without scoring it, which favours
hypotheses cut off mid-word over ones the model ended). An utterance is done
when `beam` finished hypotheses score at least as well as any live hypothesis
can still reach (an exact bound: every further token adds a log-probability
<= 0, plus the length penalty; with length_normalize the bound is loose, so
searches run longer), or once its hypotheses have ended at the maximum length.
Done utterances leave the batch, so decoding always ends after at most
max(limits) + 1 steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from asr.ctc_decode import ctc_greedy, ctc_prefix_beam_search
from asr.ctc_prefix import CTCPrefixScorer
from asr.errors import AsrError

NEG_INF = float("-inf")
CTC_SCORING_RATIO = 1.5  # candidate tokens scored by CTC per hypothesis = ratio * beam (ESPnet's default)


class SearchError(AsrError):
    """Decoding options that do not fit the model (or the language model)."""


@dataclass(frozen=True)
class DecodeOptions:
    """How `decode` searches; the defaults give greedy decoding."""

    # Which output decodes: the attention speller (CTC prefix scores join with ctc_weight), or the
    # CTC head alone (best path with beam_size 1, else prefix beam search; lm_weight and
    # length_penalty apply, the attention options do not).
    decoder: Literal["attention", "ctc"] = "attention"
    beam_size: int = 1  # hypotheses kept per utterance; 1 = greedy (greedy_search's result with these defaults)
    ctc_weight: float = 0.0  # weight of CTC prefix scores, (1 - w) * att + w * ctc; needs a model with a CTC head
    lm_weight: float = 0.0  # shallow fusion: score += lm_weight * log P_lm per token; needs an lm
    length_penalty: float = 0.0  # added to the score per output token, [EOS] included (ESPnet's penalty)
    length_normalize: bool = False  # rank finished hypotheses by score / (tokens + 1) instead of score
    # [EOS] is considered only when log P_att(EOS) > eos_threshold * max of the other tokens'
    # log P_att (SpeechBrain); 0 = always. Values >= 1 never refuse an [EOS] that is the best token.
    eos_threshold: float = 1.5
    min_len_ratio: float = 0.0  # at least floor(ratio * encoder frames) tokens before [EOS]
    max_len_ratio: float = 1.0  # at most max(1, floor(ratio * encoder frames)) tokens (guarantees an end)
    max_len: int | None = None  # absolute cap on output tokens as well (None = the ratio alone)
    nbest: int = 1  # hypotheses returned per utterance, best first
    ctc_beam: int = 0  # tokens per hypothesis scored by CTC, the best by attention (+ LM); 0 = 1.5 x beam
    # Guard against attention that stops moving or jumps back (off by default): when the attention
    # peak of a hypothesis moves back by more than guard_max_backward encoder frames, or has not
    # moved forward for more than guard_max_stall steps, that hypothesis may only end ([EOS] is then
    # allowed whatever eos_threshold and min_len_ratio say); it cannot grow further.
    attention_guard: bool = False
    guard_max_backward: int = 3  # frames the peak may move back per step
    guard_max_stall: int = 6  # steps in a row the peak may stay put (or move back within the limit)
    # Per-utterance fallback to the CTC head's best path when the attention hypothesis is
    # implausible: the attention guard stopped it, or its length differs from the CTC path's by
    # more than ctc_fallback x that length (+ 2 characters). 0 = off. The hypothesis is flagged.
    ctc_fallback: float = 0.0

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.nbest < 1 or self.ctc_beam < 0:
            raise SearchError(f"beam_size and nbest must be >= 1 and ctc_beam >= 0, got {self}")
        if self.nbest > self.beam_size:
            raise SearchError(f"nbest ({self.nbest}) cannot exceed beam_size ({self.beam_size})")
        if not 0.0 <= self.ctc_weight <= 1.0 or self.lm_weight < 0.0:
            raise SearchError(f"ctc_weight must be in [0, 1] and lm_weight >= 0, got {self.ctc_weight}, "
                              f"{self.lm_weight}")
        if self.eos_threshold < 0.0 or self.min_len_ratio < 0.0 or self.max_len_ratio <= 0.0:
            raise SearchError("eos_threshold and min_len_ratio must be >= 0 and max_len_ratio > 0")
        if self.max_len is not None and self.max_len < 1:
            raise SearchError(f"max_len must be >= 1 (or None), got {self.max_len}")
        if self.guard_max_backward < 0 or self.guard_max_stall < 0:
            raise SearchError("guard_max_backward and guard_max_stall must be >= 0")
        if self.decoder not in ("attention", "ctc"):
            raise SearchError(f"decoder must be 'attention' or 'ctc', got {self.decoder!r}")
        if self.ctc_fallback < 0:
            raise SearchError(f"ctc_fallback must be >= 0, got {self.ctc_fallback}")


@dataclass
class Hypothesis:
    """One decoded hypothesis."""

    tokens: list[int]  # without [GO]/[EOS]
    score: float  # total score used for ranking (divided by len(tokens) + 1 with length_normalize)
    # Components: "att", "ctc", "lm" = unweighted log-probabilities of the whole hypothesis, [EOS]
    # included (0 when not used); "length" = the penalty total.
    scores: dict[str, float] = field(default_factory=dict)
    guarded: bool = False  # the attention guard ended it
    fallback: bool = False  # the CTC head's best path, standing in for an implausible attention hypothesis


def token_limits(enc_lengths: Tensor, max_len_ratio: float, max_len: int | None) -> Tensor:
    """Most output tokens per utterance (B,): max(1, floor(ratio x encoder frames)), capped by max_len."""
    limits = torch.floor(enc_lengths.double() * max_len_ratio).clamp(min=1).long()
    return limits if max_len is None else limits.clamp(max=max(1, max_len))


@torch.no_grad()
def greedy_search(model: nn.Module, enc: Tensor, enc_lengths: Tensor, *, max_len_ratio: float = 1.0,
                  max_len: int | None = None) -> list[list[int]]:
    """Most likely token at each step for a batch of encodings (B, T, D) -> B token lists (no [GO]/[EOS]).

    Utterance b stops at [EOS] or after max(1, floor(max_len_ratio * enc_lengths[b])) tokens,
    capped by `max_len`; finished utterances leave the batch, so the loop always ends.
    """
    speller = model.speller
    b = enc.shape[0]
    lengths = enc_lengths.to(enc.device)
    limits_cpu = token_limits(lengths, max_len_ratio, max_len).tolist()
    steps = max(limits_cpu) if b else 0
    state = speller.init_state(enc, lengths)
    tokens = torch.full((b,), model.go_id, dtype=torch.long, device=enc.device)
    active = list(range(b))  # original index of each row still decoding
    hyps: list[list[int]] = [[] for _ in range(b)]
    for _ in range(steps):
        log_probs, state = speller.step(state, tokens)
        best = log_probs.argmax(dim=-1)  # (N,)
        keep = []
        for row, (utt, tok) in enumerate(zip(active, best.tolist())):
            if tok == model.eos_id:
                continue
            hyps[utt].append(tok)
            if len(hyps[utt]) < limits_cpu[utt]:
                keep.append(row)
        if not keep:
            break
        if len(keep) < len(active):
            idx = torch.tensor(keep, device=enc.device)
            state, best = state.index_select(idx), best.index_select(0, idx)
            active = [active[r] for r in keep]
        tokens = best
    return hyps


@torch.no_grad()
def decode(model: nn.Module, enc: Tensor, enc_lengths: Tensor, options: DecodeOptions = DecodeOptions(),
           lm: nn.Module | None = None) -> list[list[Hypothesis]]:
    """N-best hypotheses per utterance, best first, for encodings (B, T, D) with lengths (B,).

    `lm` (a CharLM or anything with `init_state(batch)` / `step(state, tokens)`) is used when
    options.lm_weight > 0. See the module docstring for the search and DecodeOptions for the knobs.
    """
    needs_ctc = options.ctc_weight > 0 or options.decoder == "ctc" or options.ctc_fallback > 0
    if needs_ctc and getattr(model, "ctc", None) is None:
        raise SearchError("ctc_weight > 0, decoder 'ctc' and ctc_fallback need a model with a CTC head "
                          "(this one was trained without CTC)")
    if options.lm_weight > 0 and lm is None:
        raise SearchError("lm_weight > 0 needs a language model")
    if enc.shape[0] == 0:
        return []
    lm = lm if options.lm_weight > 0 else None
    if options.decoder == "ctc":
        return ctc_search(model, enc, enc_lengths, options, lm)
    results = _BeamSearch(model, enc, enc_lengths, options, lm).run()
    if options.ctc_fallback > 0:
        results = _with_ctc_fallback(model, enc, enc_lengths, results, options.ctc_fallback)
    return results


def ctc_search(model: nn.Module, enc: Tensor, enc_lengths: Tensor, options: DecodeOptions,
               lm: nn.Module | None = None) -> list[list[Hypothesis]]:
    """N-best lists from the CTC head alone: best path (beam_size 1), else prefix beam search."""
    head = model.ctc
    log_probs = head.log_probs(enc)  # (B, T, V) float32
    if options.beam_size == 1 and lm is None:
        return [[Hypothesis(tokens, 0.0, {"ctc": 0.0})] for tokens in ctc_greedy(log_probs, enc_lengths, head.blank_id)]
    out = []
    for b in range(enc.shape[0]):
        hyps = ctc_prefix_beam_search(log_probs[b], int(enc_lengths[b]), beam=options.beam_size, blank=head.blank_id,
                                      lm=lm, lm_weight=options.lm_weight, length_bonus=options.length_penalty,
                                      go_id=model.go_id, eos_id=model.eos_id, token_beam=options.ctc_beam or None,
                                      nbest=options.nbest)
        out.append([Hypothesis(h.tokens, h.score, {"ctc": h.ctc, "lm": h.lm}) for h in hyps])
    return out


def implausible(att_len: int, ctc_len: int, margin: float) -> bool:
    """True when an attention hypothesis of att_len labels disagrees with CTC's ctc_len beyond the margin."""
    return abs(att_len - ctc_len) > margin * ctc_len + 2


def _with_ctc_fallback(model: nn.Module, enc: Tensor, enc_lengths: Tensor, results: list[list[Hypothesis]],
                       margin: float) -> list[list[Hypothesis]]:
    """Replace the N-best list of each utterance whose best hypothesis is implausible by CTC's best path."""
    paths = ctc_greedy(model.ctc.log_probs(enc), enc_lengths, model.ctc.blank_id)
    out = []
    for nbest, path in zip(results, paths):
        best = nbest[0]
        if best.guarded or implausible(len(best.tokens), len(path), margin):
            nbest = [Hypothesis(path, NEG_INF, {"ctc": 0.0}, guarded=best.guarded, fallback=True)]
        out.append(nbest)
    return out


class _BeamSearch:
    """The state of one `decode` call: live beams, finished pools, decoder/LM/CTC states.

    Per-utterance tensors have B_active rows (utterances still decoding), per-hypothesis ones
    N = B_active * K rows, utterance-major. P = K finished hypotheses are kept per utterance.
    """

    def __init__(self, model: nn.Module, enc: Tensor, enc_lengths: Tensor, opts: DecodeOptions,
                 lm: nn.Module | None) -> None:
        self.model, self.opts, self.lm = model, opts, lm
        self.speller = model.speller
        self.eos = model.eos_id
        dev = self.device = enc.device
        self.eos_idx = torch.tensor([self.eos], device=dev)
        b, k = enc.shape[0], opts.beam_size
        self.k = k
        lengths = enc_lengths.to(dev).long()
        self.limit = limit = token_limits(lengths, opts.max_len_ratio, opts.max_len)
        self.min_len = torch.minimum(torch.floor(lengths.double() * opts.min_len_ratio).long(), limit)
        self.utt_ids = list(range(b))  # original index of each active utterance
        self.results: list[list[Hypothesis]] = [[] for _ in range(b)]

        rows = torch.arange(b, device=dev).repeat_interleave(k)  # (N,) utterance of each hypothesis
        state = self.speller.init_state(enc, lengths)  # a state may share memory among its beams
        self.dec = state.expand_beams(k) if hasattr(state, "expand_beams") else state.index_select(rows)
        self.lm_state = lm.init_state(b * k) if lm is not None else None
        self.ctc: CTCPrefixScorer | None = None
        self.ctc_state = None
        if opts.ctc_weight > 0:
            head = model.ctc
            self.ctc = CTCPrefixScorer(head.log_probs(enc), lengths, blank=head.blank_id)
            self.ctc_state = self.ctc.init_state(rows)
        self.tokens = torch.full((b * k,), model.go_id, dtype=torch.long, device=dev)  # (N,) last token fed

        # Live hypotheses: one real beam entry per utterance at the start, the others -inf.
        self.score = torch.full((b, k), NEG_INF, device=dev)
        self.score[:, 0] = 0.0  # (B, K) total score
        self.att = torch.zeros(b, k, device=dev)  # (B, K) sum of attention log-probabilities
        self.lm_sum = torch.zeros(b, k, device=dev)  # (B, K) sum of LM log-probabilities
        # (B, K, L + 1) tokens; the last column only ever holds tokens of hypotheses past the limit
        self.hist = torch.zeros(b, k, int(limit.max()) + 1, dtype=torch.long, device=dev)
        self.peak = torch.full((b * k,), -1, dtype=torch.long, device=dev)  # (N,) attention peak frame
        self.stall = torch.zeros(b * k, dtype=torch.long, device=dev)  # (N,) steps without moving forward
        self.guard_stop = torch.zeros(b * k, dtype=torch.bool, device=dev)  # (N,) stopped by the guard this step
        # Finished hypotheses, best first: rank score, components, lengths, tokens.
        self.p_rank = torch.full((b, k), NEG_INF, device=dev)  # (B, P)
        self.p_comp = torch.zeros(4, b, k, device=dev)  # (4, B, P): att, ctc, lm, 1 if the guard ended it
        self.p_len = torch.zeros(b, k, dtype=torch.long, device=dev)
        self.p_tok = torch.zeros_like(self.hist)
        self.done = torch.zeros(b, dtype=torch.bool, device=dev)

    # ---- main loop -------------------------------------------------------------------------

    def run(self) -> list[list[Hypothesis]]:
        """Decode until every utterance is done; returns the N-best lists in input order."""
        i = 0  # tokens in every live hypothesis
        while True:
            ending = self.done | (self.limit < i)  # past the limit: every hypothesis has ended
            if bool(ending.any()):
                self._emit(ending)
                if not self.utt_ids:
                    break
            self._step(i)
            i += 1
        return self.results

    def _step(self, i: int) -> None:
        """Extend every live hypothesis by one token (hypotheses hold i tokens before)."""
        k, b = self.k, len(self.utt_ids)
        n = b * k
        att_lp, self.dec = self.speller.step(self.dec, self.tokens)  # (N, V)
        v = att_lp.shape[1]
        full, lm_lp, psi_full, eos_psi = self._token_scores(att_lp)
        full = self._eos_rules(i, full, att_lp)

        # Best candidates over (K x V) per utterance; [EOS] ones among the best K are finished.
        cand = (self.score.reshape(n, 1) + full).view(b, k * v)
        top_v, top_i = cand.topk(min(2 * k, k * v), dim=1)  # (B, 2K), best first
        src, tk = top_i // v, top_i % v
        is_eos = tk == self.eos
        fin = is_eos[:, :k] & torch.isfinite(top_v[:, :k])
        if bool(fin.any()):
            self._finish_eos(fin, top_v[:, :k], src[:, :k], i, att_lp, lm_lp, eos_psi)
        keep = torch.argsort(is_eos.to(torch.int8), dim=1, stable=True)[:, :k]  # best K that do not end
        new_src, new_tok = src.gather(1, keep), tk.gather(1, keep)  # (B, K)
        self.score = top_v.gather(1, keep).masked_fill(is_eos.gather(1, keep), NEG_INF)

        # Reorder every per-hypothesis state to the parents of the new beams, append the tokens.
        rows = (torch.arange(b, device=self.device).unsqueeze(1) * k + new_src).view(n)  # (N,) parents
        flat_tok = new_tok.view(n)
        self.att = self.att.reshape(n)[rows].view(b, k) + att_lp[rows, flat_tok].view(b, k)
        if lm_lp is not None:
            self.lm_sum = self.lm_sum.reshape(n)[rows].view(b, k) + lm_lp[rows, flat_tok].view(b, k)
            self.lm_state = self.lm_state.index_select(rows)
        if self.ctc is not None:
            self.ctc_state = self.ctc.extend(self.ctc_state, rows, flat_tok, psi_full[rows, flat_tok])
        # A state may offer a cheaper reorder for rows that stay within their utterance.
        self.dec = getattr(self.dec, "reorder_beams", self.dec.index_select)(rows)
        self.hist = self.hist.gather(1, new_src.unsqueeze(-1).expand_as(self.hist))
        self.hist[:, :, i] = new_tok
        if self.opts.attention_guard:
            self.peak, self.stall = self.peak[rows], self.stall[rows]
        self.tokens = flat_tok
        self.done = self.p_rank[:, k - 1] >= self._live_bound(i + 1)

    # ---- scores ----------------------------------------------------------------------------

    def _token_scores(self, att_lp: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        """Fused score of each next token (N, V), and the LM log-probs, CTC prefix scores (N, V) and
        CTC [EOS] scores (N,) behind it (None when not used)."""
        opts = self.opts
        tok = att_lp if opts.ctc_weight == 0 else (1.0 - opts.ctc_weight) * att_lp
        lm_lp = None
        if self.lm is not None:
            lm_lp, self.lm_state = self.lm.step(self.lm_state, self.tokens)
            if lm_lp.shape[1] != att_lp.shape[1]:
                raise SearchError(f"the language model has {lm_lp.shape[1]} classes, the recognizer "
                                  f"{att_lp.shape[1]}")
            tok = tok + opts.lm_weight * lm_lp
        psi_full = eos_psi = None
        if self.ctc is not None:
            tok, psi_full, eos_psi = self._ctc_fuse(tok, att_lp)
        if opts.length_penalty:
            tok = tok + opts.length_penalty
        return tok, lm_lp, psi_full, eos_psi

    def _eos_rules(self, i: int, full: Tensor, att_lp: Tensor) -> Tensor:
        """`full` (N, V) with [EOS] at -inf where a hypothesis may not end yet (minimum length, EOS
        threshold), and only [EOS] left at the maximum length or where the attention guard stops a
        hypothesis."""
        opts, eos = self.opts, self.eos
        allow = i >= self.min_len.repeat_interleave(self.k)  # (N,)
        if opts.eos_threshold > 0:
            best_other = att_lp.index_fill(1, self.eos_idx, NEG_INF).amax(dim=1)
            allow = allow & (att_lp[:, eos] > opts.eos_threshold * best_other)
        eos_col = full[:, eos]
        stop = (self.limit == i).repeat_interleave(self.k)  # (N,) hypotheses that may only end
        if opts.attention_guard:
            self.guard_stop = self._guard()
            stop = stop | self.guard_stop
        allow = allow | stop
        full = full.masked_fill(stop.unsqueeze(1), NEG_INF)
        return full.index_copy(1, self.eos_idx, torch.where(allow, eos_col, NEG_INF).unsqueeze(1))

    def _ctc_fuse(self, tok: Tensor, att_lp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Add ctc_weight x (CTC prefix score increment) to the best `ctc_beam` tokens of each
        hypothesis (the others get -inf) and to [EOS]; returns (scores (N, V), psi (N, V), psi_eos (N,))."""
        opts, state = self.opts, self.ctc_state
        c = opts.ctc_beam or int(CTC_SCORING_RATIO * self.k)
        c = max(1, min(c, tok.shape[1] - 1))
        eos_idx = self.eos_idx
        key = tok if opts.ctc_weight < 1.0 else tok + att_lp  # pruned by attention (+ LM) scores
        cand = key.index_fill(1, eos_idx, NEG_INF).topk(c, dim=1).indices  # (N, C)
        psi = self.ctc.score(state, cand)  # (N, C) float64
        eos_psi = self.ctc.score_eos(state)  # (N,)
        psi_full = torch.full(tok.shape, NEG_INF, dtype=psi.dtype, device=self.device)
        psi_full = psi_full.scatter(1, cand, psi).index_copy(1, eos_idx, eos_psi.unsqueeze(1))
        # Increment over the parent's prefix score; an impossible prefix stays -inf (never NaN).
        delta = torch.where(psi_full == NEG_INF, NEG_INF, psi_full - state.psi.unsqueeze(1))
        full = tok + opts.ctc_weight * delta.to(tok.dtype)
        return full, psi_full, eos_psi

    def _guard(self) -> Tensor:
        """Update the attention peaks after a step; True (N,) where the attention jumped back or stalled."""
        weights = getattr(self.dec, "weights", None)
        if weights is None:
            raise SearchError("attention_guard needs a decoder state with attention weights")
        peak = weights.argmax(dim=1)  # (N,)
        back = peak < self.peak - self.opts.guard_max_backward
        self.stall = torch.where(peak > self.peak, 0, self.stall + 1)
        self.peak = peak
        return back | (self.stall > self.opts.guard_max_stall)

    def _live_bound(self, length: int) -> Tensor:
        """Best rank score (B,) any live hypothesis (`length` tokens now) can still reach."""
        opts = self.opts
        lp = opts.length_penalty
        remaining = (self.limit - length).unsqueeze(1).to(self.score.dtype)  # tokens that may still come, (B, 1)
        upper = self.score + (lp * (remaining + 1) if lp > 0 else lp)  # + [EOS]'s penalty
        if opts.length_normalize:
            longest = (self.limit + 1).unsqueeze(1).to(self.score.dtype)
            upper = torch.where(upper <= 0, upper / longest, upper / (length + 1))
        return upper.amax(dim=1)

    def _rank(self, total: Tensor, length: int) -> Tensor:
        """Rank score of finished hypotheses of `length` tokens."""
        return total / (length + 1) if self.opts.length_normalize else total

    # ---- finished hypotheses ---------------------------------------------------------------

    def _finish_eos(self, fin: Tensor, total: Tensor, src: Tensor, i: int, att_lp: Tensor,
                    lm_lp: Tensor | None, eos_psi: Tensor | None) -> None:
        """Add the [EOS] candidates `fin` (B, K) (totals (B, K), parents `src` (B, K)) to the pools."""
        b, k = fin.shape
        rows = torch.arange(b, device=self.device).unsqueeze(1) * k + src  # (B, K)
        att = self.att.gather(1, src) + att_lp[rows, self.eos]
        ctc = eos_psi[rows].to(att.dtype) if eos_psi is not None else torch.zeros_like(att)
        lm = self.lm_sum.gather(1, src) + lm_lp[rows, self.eos] if lm_lp is not None else torch.zeros_like(att)
        guarded = self.guard_stop[rows].to(att.dtype)
        tokens = self.hist.gather(1, src.unsqueeze(-1).expand_as(self.hist))
        total = total.masked_fill(~fin, NEG_INF)
        self._merge(self._rank(total, i), torch.stack([att, ctc, lm, guarded]), i, tokens)

    def _merge(self, rank: Tensor, comp: Tensor, length: int, tokens: Tensor) -> None:
        """Keep the best P of the pool and the new finished hypotheses (rank (B, K'), -inf = none)."""
        p = self.p_rank.shape[1]
        rank_all = torch.cat([self.p_rank, rank], dim=1)  # (B, P + K')
        best = rank_all.topk(p, dim=1).indices  # (B, P)
        self.p_rank = rank_all.gather(1, best)
        self.p_comp = torch.cat([self.p_comp, comp], dim=2).gather(2, best.unsqueeze(0).expand(len(comp), -1, -1))
        self.p_len = torch.cat([self.p_len, torch.full_like(rank, length, dtype=torch.long)], dim=1).gather(1, best)
        best_tok = best.unsqueeze(-1).expand(-1, -1, self.p_tok.shape[2])
        self.p_tok = torch.cat([self.p_tok, tokens], dim=1).gather(1, best_tok)

    def _emit(self, done: Tensor) -> None:
        """Write the N-best lists of the utterances `done` (B,) and drop them from the batch."""
        idx = done.nonzero().squeeze(1)
        lp, nbest = self.opts.length_penalty, self.opts.nbest
        ranks, comps = self.p_rank[idx].tolist(), self.p_comp[:, idx].tolist()
        lens, toks = self.p_len[idx].tolist(), self.p_tok[idx].tolist()
        for j, row in enumerate(idx.tolist()):
            hyps = []
            for p in range(len(ranks[j])):
                if len(hyps) == nbest or ranks[j][p] == NEG_INF:
                    break
                n = lens[j][p]
                hyps.append(Hypothesis(toks[j][p][:n], ranks[j][p], {
                    "att": comps[0][j][p], "ctc": comps[1][j][p], "lm": comps[2][j][p], "length": lp * (n + 1)},
                    guarded=comps[3][j][p] > 0))
            if not hyps:  # every path was impossible (e.g. CTC prefix scores of -inf)
                hyps.append(Hypothesis([], NEG_INF, {"att": NEG_INF, "ctc": NEG_INF, "lm": 0.0, "length": lp}))
            self.results[self.utt_ids[row]] = hyps
        keep = (~done).nonzero().squeeze(1)
        self.utt_ids = [self.utt_ids[r] for r in keep.tolist()]
        if self.utt_ids:
            self._keep(keep)

    def _keep(self, keep: Tensor) -> None:
        """Restrict every tensor to the utterances `keep` (B',) and their hypotheses."""
        k = self.k
        rows = (keep.unsqueeze(1) * k + torch.arange(k, device=self.device)).view(-1)  # (B' K,)
        for name in ("limit", "min_len", "score", "att", "lm_sum", "hist", "done",
                     "p_rank", "p_len", "p_tok"):
            setattr(self, name, getattr(self, name).index_select(0, keep))
        self.p_comp = self.p_comp.index_select(1, keep)
        for name in ("tokens", "peak", "stall", "guard_stop"):
            setattr(self, name, getattr(self, name).index_select(0, rows))
        self.dec = self.dec.index_select(rows)
        if self.lm_state is not None:
            self.lm_state = self.lm_state.index_select(rows)
        if self.ctc_state is not None:
            self.ctc_state = self.ctc_state.index_select(rows)
