"""Attention speller: an LSTM decoder that emits one character per step.

One step (Chan et al. 2016, with input feeding):

    x_i      = [embed(y_{i-1}); c_{i-1}]            previous token and previous context
    s_i      = LSTMCell stack(x_i, s_{i-1})          state
    c_i, a_i = attend(s_i, encodings, a_{i-1})       context and attention weights
    logits_i = out([s_i; c_i])                       Linear, or Linear -> tanh -> Linear

With `query: previous` the attention is queried by the state before the step
instead, and its context enters this step's LSTM (Bahdanau et al. 2015; ESPnet's
RNN decoder):

    c_i, a_i = attend(s_{i-1}, encodings, a_{i-1})
    s_i      = LSTMCell stack([embed(y_{i-1}); c_i], s_{i-1})
    logits_i = out([s_i; c_i])

A step's attention then depends on the previous state only, which beam
hypotheses extended from the same parent share: `step` attends once per parent
(and computes the first cell's state and context products once per parent too).

Decoding starts from [GO] (with a zero context and uniform weights over the
valid frames) and is trained to emit [EOS]. Everything a step needs is in one
`DecoderState`, including the encoder memory it attends to, so search reorders
or expands hypotheses with `state.index_select(idx)`. Teacher-forced `forward`
and `step` run the same code, so they give the same numbers (at inference, `step`
takes the embedding part of the first cell's input product from a per-token
table instead: the same values to ~1e-6).

Beam search holds K hypotheses per utterance; their encoder memory is stored
once per utterance (`expand_beams`), not once per hypothesis, so attention
reads each utterance's keys and encodings once per step for all its beams.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from asr.models.attention import AttentionConfig, build_attention, uniform_weights, weight_dtype
from asr.models.listener import time_mask

QueryKind = Literal["current", "previous"]


@dataclass(frozen=True)
class SpellerConfig:
    """Shape of the attention decoder."""

    vocab_size: int = 0  # output classes V (blank, [GO], [EOS], characters); 0 = set by build_las
    embed_dim: int = 320  # token embedding size
    hidden: int = 320  # LSTM units per layer
    layers: int = 1  # stacked LSTM cells
    output_hidden: int = 0  # 0: logits = Linear([s; c]); > 0: Linear([s; c] -> output_hidden) -> tanh -> Linear
    attention: AttentionConfig = field(default_factory=AttentionConfig)  # attention kind and sizes
    dropout: float = 0.0  # dropout on the embedding, between cells and before the output layer
    scheduled_sampling: float = 0.0  # training only: probability of feeding the model's own greedy token
    # The state that queries the attention: "current" = the one this step's LSTM produced (Chan et al.
    # 2016); "previous" = the one before the step, so the context feeds this step's LSTM (ESPnet's order).
    query: QueryKind = "current"

    def __post_init__(self) -> None:
        if self.vocab_size < 0 or self.embed_dim < 1 or self.hidden < 1 or self.layers < 1 or self.output_hidden < 0:
            raise ValueError(f"speller: bad sizes in {self}")
        if self.query not in ("current", "previous"):
            raise ValueError(f"speller: query must be 'current' or 'previous', got {self.query!r}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.scheduled_sampling <= 1.0:
            raise ValueError(f"speller: dropout must be in [0, 1) and scheduled_sampling in [0, 1], got {self}")


@dataclass(frozen=True)
class DecoderState:
    """Everything one decoder step needs, for N hypotheses (rows) over M utterances.

    Rows are utterance-major in groups of N / M: rows g*m .. g*m + g - 1 attend to memory row m
    (g = 1 except in beam search, where g is the beam).
    """

    h: tuple[Tensor, ...]  # LSTM hidden state per layer, each (N, H)
    c: tuple[Tensor, ...]  # LSTM cell state per layer, each (N, H)
    context: Tensor  # previous context vector (N, D)
    weights: Tensor  # previous attention weights (N, T)
    enc: Tensor  # encoder memory attended to (M, T, D)
    keys: Tensor  # attention keys of that memory (M, T, A)
    mask: Tensor  # valid encoder frames (M, T) bool
    # Row of the state before `reorder_beams` / `expand_beams` each row was copied from: rows with
    # the same source are equal (siblings). None: no such knowledge.
    source: Tensor | None = None

    @property
    def size(self) -> int:
        """Number of hypotheses N."""
        return self.context.shape[0]

    @property
    def group(self) -> int:
        """Hypotheses per memory row, N / M."""
        return self.size // self.enc.shape[0]

    def _select_rows(self, idx: Tensor, **memory: Tensor) -> DecoderState:
        def sel(t: Tensor) -> Tensor:
            return t.index_select(0, idx)
        fields = dict(enc=self.enc, keys=self.keys, mask=self.mask) | memory
        return DecoderState(h=tuple(sel(t) for t in self.h), c=tuple(sel(t) for t in self.c),
                            context=sel(self.context), weights=sel(self.weights), **fields)

    def _select_memory(self, rows: Tensor) -> dict[str, Tensor]:
        return {name: getattr(self, name).index_select(0, rows) for name in ("enc", "keys", "mask")}

    def index_select(self, idx: Tensor) -> DecoderState:
        """Rows `idx` of every hypothesis field: reorders, drops or repeats hypotheses.

        Where `idx` keeps groups of g rows of one utterance each (dropping finished utterances),
        the memory stays one row per utterance; otherwise each hypothesis gets its own memory row.
        """
        g = self.group
        utt = idx // g if g > 1 else idx
        if g > 1 and idx.numel() % g == 0 and bool((utt.view(-1, g) == utt[::g].unsqueeze(1)).all()):
            return self._select_rows(idx, **self._select_memory(utt[::g]))
        return self._select_rows(idx, **self._select_memory(utt))

    def expand_beams(self, k: int) -> DecoderState:
        """Each hypothesis repeated k times (rows utterance-major), sharing its memory row."""
        if self.group != 1:
            raise ValueError(f"expand_beams needs one hypothesis per memory row, got {self.group}")
        idx = torch.arange(self.size, device=self.context.device).repeat_interleave(k)
        return replace(self._select_rows(idx), source=idx)

    def reorder_beams(self, idx: Tensor) -> DecoderState:
        """`index_select` for a reorder that keeps every row within its utterance's group (beam
        search): the memory is left as it is."""
        return replace(self._select_rows(idx), source=idx)


def sibling_rows(source: Tensor, group: int) -> tuple[Tensor, Tensor, list[int]] | None:
    """Where rows in groups of `group` per utterance were copied from `source` rows of the same
    utterance: (one row per distinct source, padded to the same count G per utterance: (M x G,);
    each row's position among those (N,); the count of distinct sources per utterance), or None
    when no utterance has two rows from one source.
    """
    if group == 1:
        return None
    n = source.numel()
    m = n // group
    src, perm = source.view(m, group).sort(dim=1)
    new = torch.ones_like(src, dtype=torch.bool)
    new[:, 1:] = src[:, 1:] != src[:, :-1]  # first of its source, in sorted order
    counts = new.sum(dim=1).tolist()
    g = max(counts)
    if g == group:
        return None
    rank = torch.empty_like(perm).scatter_(1, perm, new.long().cumsum(dim=1) - 1)  # (M, group) slot of each row
    rows = torch.arange(n, device=source.device).view(m, group)
    # Slot q of utterance u holds one of its rows from its q-th source (copies are equal, any one
    # will do); slots past an utterance's count keep its first row.
    compact = rows[:, :1].expand(m, g).clone().scatter_(1, rank, rows)
    where = rank + torch.arange(m, device=source.device).unsqueeze(1) * g
    return compact.view(-1), where.view(-1), counts


class Speller(nn.Module):
    """LSTM decoder with attention over encodings (B, T, enc_dim); see the module docstring."""

    def __init__(self, cfg: SpellerConfig, enc_dim: int) -> None:
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError("speller: vocab_size must be set (build_las sets it from the vocabulary)")
        self.cfg = cfg
        self.enc_dim = enc_dim
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        sizes = [cfg.embed_dim + enc_dim] + [cfg.hidden] * (cfg.layers - 1)
        self.cells = nn.ModuleList(nn.LSTMCell(n, cfg.hidden) for n in sizes)
        self.attention = build_attention(cfg.attention, cfg.hidden, enc_dim)
        out_in = cfg.hidden + enc_dim
        self.output_hidden = nn.Linear(out_in, cfg.output_hidden) if cfg.output_hidden else None
        self.output = nn.Linear(cfg.output_hidden or out_in, cfg.vocab_size)  # its bias holds the [EOS] bias
        self.dropout = nn.Dropout(cfg.dropout)
        self._cache: dict[str, tuple[tuple[int, ...], Tensor]] = {}  # inference tables, see _derived

    def init_state(self, enc: Tensor, enc_lengths: Tensor) -> DecoderState:
        """State before the first step ([GO] comes as the first token): enc (B, T, D), lengths (B,)."""
        b, t, _ = enc.shape
        mask = time_mask(enc_lengths.to(enc.device), t)  # (B, T)
        zeros = enc.new_zeros(b, self.cfg.hidden)
        return DecoderState(
            h=(zeros,) * self.cfg.layers, c=(zeros,) * self.cfg.layers, context=enc.new_zeros(b, self.enc_dim),
            weights=uniform_weights(mask).to(weight_dtype(enc.dtype)), enc=enc,
            keys=self.attention.preprocess(enc), mask=mask)

    def _derived(self, name: str, params: tuple[Tensor, ...], build: Callable[[], Tensor]) -> Tensor:
        """`build()`, a table computed from `params`, kept until one of them changes (in place or by
        moving the module)."""
        key = tuple(x for p in params for x in (p.data_ptr(), p._version))
        if name not in self._cache or self._cache[name][0] != key:
            self._cache[name] = (key, build())
        return self._cache[name][1]

    def token_gates(self) -> Tensor:
        """(V, 4H): the first LSTM cell's input gates from each token's embedding, biases included.

        At inference the embedding part of the first cell's input product is a lookup in this
        table instead of a (N, E) x (E, 4H) product per step (about a third of the cell's time).
        """
        cell, e = self.cells[0], self.cfg.embed_dim
        return self._derived("token_gates", (self.embed.weight, cell.weight_ih, cell.bias_ih, cell.bias_hh),
                             lambda: torch.addmm(cell.bias_ih + cell.bias_hh, self.embed.weight,
                                                 cell.weight_ih[:, :e].t()))

    def _state_gates(self, context: Tensor, h: Tensor) -> Tensor:
        """The first cell's gate products of the context and the previous state (N, 4H), no biases:
        one product with both weights side by side (5-20 % faster than two)."""
        cell, e = self.cells[0], self.cfg.embed_dim
        weight = self._derived("state_weight", (cell.weight_ih, cell.weight_hh),
                               lambda: torch.cat([cell.weight_ih[:, e:], cell.weight_hh], dim=1).t())
        return torch.mm(torch.cat([context, h], dim=1), weight)

    def _first_cell(self, tokens: Tensor, state_gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
        """The first LSTM cell at inference, its token product from `token_gates`: -> (h, c)."""
        gates = self.token_gates().index_select(0, tokens).add_(state_gates)
        i, f, g, o = gates.chunk(4, dim=1)  # nn.LSTMCell's gate order
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def _attend_previous(self, state: DecoderState, inference: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """`query: previous`: context (N, D) and weights (N, T) from the previous state; where
        siblings share them (beam search at inference), also the first cell's state gate
        products (N, 4H), all computed once per parent. Else the gates are None."""
        query = self.dropout(state.h[-1])
        rows = sibling_rows(state.source, state.group) if inference and state.source is not None else None
        if rows is None:
            context, weights = self.attention(query, state.enc, state.keys, state.mask, state.weights)
            return context, weights, None
        compact, where, live = rows  # rows past live[u] are padding: no result of theirs is read
        context, weights = self.attention(query.index_select(0, compact), state.enc, state.keys, state.mask,
                                          state.weights.index_select(0, compact), live)
        gates = self._state_gates(context, state.h[0].index_select(0, compact))
        return context.index_select(0, where), weights.index_select(0, where), gates.index_select(0, where)

    def _advance(self, state: DecoderState, emb: Tensor | None, tokens: Tensor | None = None
                 ) -> tuple[Tensor, DecoderState]:
        """One step from embedded tokens (N, E), or at inference from the tokens (N,) themselves:
        -> logits (N, V), new state."""
        previous = self.cfg.query == "previous"
        if previous:
            context, weights, gates = self._attend_previous(state, inference=emb is None)
        else:  # input feeding: the previous step's context
            context, gates = state.context, None
        if emb is None and gates is None:
            gates = self._state_gates(context, state.h[0])
        x = None if emb is None else torch.cat([emb, context], dim=-1)  # (N, E + D)
        hs, cs = [], []
        for layer, cell in enumerate(self.cells):
            if x is None:
                h, c = self._first_cell(tokens, gates, state.c[0])
            else:
                h, c = cell(x, (state.h[layer], state.c[layer]))
            hs.append(h)
            cs.append(c)
            x = self.dropout(h)
        if not previous:
            context, weights = self.attention(x, state.enc, state.keys, state.mask, state.weights)
        out = torch.cat([x, context], dim=-1)  # (N, H + D)
        if self.output_hidden is not None:
            out = self.dropout(torch.tanh(self.output_hidden(out)))
        logits = self.output(out)  # (N, V)
        new = DecoderState(h=tuple(hs), c=tuple(cs), context=context, weights=weights,
                           enc=state.enc, keys=state.keys, mask=state.mask)
        return logits, new

    def step(self, state: DecoderState, tokens: Tensor) -> tuple[Tensor, DecoderState]:
        """Feed tokens (N,) -> log-probabilities of the next token (N, V) and the new state."""
        if not self.training and not torch.is_grad_enabled():
            logits, new = self._advance(state, None, tokens)
        else:
            logits, new = self._advance(state, self.dropout(self.embed(tokens)))
        return torch.log_softmax(logits.float(), dim=-1), new

    def forward(self, enc: Tensor, enc_lengths: Tensor, tokens_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: tokens_in (B, U) starting with [GO] -> logits (B, U, V), weights (B, U, T).

        In training mode with scheduled_sampling p > 0, each step after the first feeds, with
        probability p per utterance, the model's own greedy token instead of the teacher's.
        """
        state = self.init_state(enc, enc_lengths)
        sampling = self.training and self.cfg.scheduled_sampling > 0.0
        emb_all = None if sampling else self.dropout(self.embed(tokens_in))  # (B, U, E)
        logits_all, weights_all = [], []
        for i in range(tokens_in.shape[1]):
            if emb_all is not None:
                emb = emb_all[:, i]
            else:
                tokens = tokens_in[:, i]
                if i > 0:
                    own = torch.rand(tokens.shape, device=tokens.device) < self.cfg.scheduled_sampling
                    tokens = torch.where(own, logits_all[-1].detach().argmax(dim=-1), tokens)
                emb = self.dropout(self.embed(tokens))
            logits, state = self._advance(state, emb)
            logits_all.append(logits)
            weights_all.append(state.weights)
        return torch.stack(logits_all, dim=1), torch.stack(weights_all, dim=1)
