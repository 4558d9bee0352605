"""Attention of the speller over the listener's encodings.

Three scorers share one stateless interface, so a decoder state (and beam
search) carries everything explicitly:

* `preprocess(enc)` -> keys, computed once per utterance;
* `forward(query, enc, keys, mask, prev_weights)` -> (context, weights).

Queries may come in groups: with N = g x M queries over M utterances (g
hypotheses each, utterance-major, as in beam search) the memory (enc, keys,
mask) has M rows and each is read once for its g queries.

Kinds (energies e over the T encoder frames, then normalised over valid frames):

* "location" (Chorowski et al. 2015): e = w^T tanh(W s + V h + U f + b),
  f = conv1d over the previous attention weights (ESPnet default 10 channels,
  201 taps);
* "additive" (Bahdanau et al. 2015): e = w^T tanh(W s + V h + b);
* "dot" (Luong et al. 2015, scaled): e = (W s) . (V h) / sqrt(A).

Padded frames get exactly zero weight (-inf before the softmax). Options:
sharpening multiplies energies by beta > 1 before normalising; smoothing
replaces the softmax by sigmoid(e) / sum(sigmoid(e)) (Chorowski et al.).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

AttentionKind = Literal["location", "additive", "dot"]


@dataclass(frozen=True)
class AttentionConfig:
    """Which attention the speller uses, and its sizes."""

    kind: AttentionKind = "location"  # location | additive | dot
    dim: int = 320  # attention dimension A
    conv_channels: int = 10  # location features: channels of the convolution over previous weights
    conv_kernel: int = 201  # location features: taps of that convolution (odd; 201 = 100 each side)
    sharpening: float = 1.0  # beta: energies are scaled by beta before normalising (ESPnet uses 2.0)
    smoothing: bool = False  # sigmoid normalisation instead of softmax (flatter alignments)
    # Windowing (Chorowski et al. 2015): attend only to frames [p - window_back, p + window] around
    # the peak p of the previous weights (the first frame at the start, where they are uniform), so
    # alignments can only move forward a little at a time. 0 = off.
    window: int = 0
    window_back: int = 1  # frames behind the previous peak that stay visible when windowing

    def __post_init__(self) -> None:
        if self.dim < 1 or self.conv_channels < 1 or self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(f"attention: dim/conv_channels must be >= 1 and conv_kernel odd, got {self}")
        if self.sharpening <= 0:
            raise ValueError(f"attention: sharpening must be > 0, got {self.sharpening}")
        if self.window < 0 or self.window_back < 0:
            raise ValueError(f"attention: window and window_back must be >= 0, got {self}")


# Inference on CPU computes location energies for this many (hypothesis, frame, dim) entries at a
# time in one reused buffer (a fresh N x T x A temporary per step is ~3x slower). 4 MB: at the
# standard size (T 196, A 320) 2^20 was 12-15 % faster than 2^18 and as fast as 2^21.
INFERENCE_BLOCK = 1 << 20
# At inference on CPU, location convolutions with at least this many taps run through FFTs (~5x
# faster at 201 taps). Not in training: there the FFT's backward ate the gain and added ~500 MB.
FFT_MIN_TAPS = 32


def cpu_inference(x: Tensor) -> bool:
    """True when `x` is on the CPU and autograd is off: where the inference-only fast paths apply."""
    return not torch.is_grad_enabled() and x.device.type == "cpu"


def score_tanh(score: nn.Linear, doubled: Tensor, *, inplace: bool = False) -> Tensor:
    """w^T tanh(x) given 2x (..., A) -> (...), computed as 2 w^T sigmoid(2x) - sum(w).

    The same value to ~2e-7 absolute, but torch's CPU tanh is ~15x slower than its sigmoid and this
    is the largest elementwise op of every decoder step (B x T x A per step). `inplace` overwrites
    `doubled` (inference only).
    """
    s = doubled.sigmoid_() if inplace else torch.sigmoid(doubled)
    return 2.0 * score(s).squeeze(-1) - score.weight.sum()


def weight_dtype(dtype: torch.dtype) -> torch.dtype:
    """Attention weights are at least float32, also for bfloat16 energies: a softmax over hundreds
    of frames in bfloat16 (8-bit mantissa) would round most weights, and the next step's location
    features are computed from them."""
    return torch.promote_types(dtype, torch.float32)


def uniform_weights(mask: Tensor) -> Tensor:
    """Attention weights spread evenly over the valid frames: (B, T) bool -> (B, T) float."""
    m = mask.float()
    return m / m.sum(dim=1, keepdim=True)


class Attention(nn.Module):
    """Base class: turns energies into masked weights and a context vector."""

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def preprocess(self, enc: Tensor) -> Tensor:
        """Keys computed once per utterance: (B, T, D) -> (B, T, A)."""
        raise NotImplementedError

    def energies(self, query: Tensor, keys: Tensor, prev_weights: Tensor, mask: Tensor | None = None,
                 live: list[int] | None = None) -> Tensor:
        """Unnormalised scores (N, T) for queries (N, Dq) over keys (M, T, A), N = g x M. With the
        valid-frame `mask` (M, T), scores of padded frames may be left at any finite value; with
        `live`, so may those of queries past the first live[m] of memory row m (padding rows)."""
        raise NotImplementedError

    def forward(self, query: Tensor, enc: Tensor, keys: Tensor, mask: Tensor,
                prev_weights: Tensor, live: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """Attend: query (N, Dq), enc (M, T, D), keys (M, T, A), mask (M, T) valid, prev (N, T)
        -> context (N, D), weights (N, T); N = g x M, utterance-major. Only the first live[m]
        queries of memory row m are used (None: all); the others' results are left unspecified."""
        e = self.energies(query, keys, prev_weights, mask, live)  # (N, T)
        (n, t), m = e.shape, enc.shape[0]
        g = n // m
        if g > 1:
            mask = mask.repeat_interleave(g, dim=0)  # (N, T)
        if self.cfg.window:
            mask = mask & self.window_mask(prev_weights)
        if self.cfg.sharpening != 1.0:
            e = e * self.cfg.sharpening
        if self.cfg.smoothing:
            s = torch.sigmoid(e.to(weight_dtype(e.dtype))).masked_fill(~mask, 0.0)
            weights = s / s.sum(dim=1, keepdim=True)
        else:
            weights = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=1, dtype=weight_dtype(e.dtype))
        context = torch.bmm(weights.view(m, g, t).to(enc.dtype), enc).view(n, -1)  # (N, D)
        return context, weights

    def window_mask(self, prev_weights: Tensor) -> Tensor:
        """Frames within the window around each row's previous peak: (B, T) bool.

        The peak is a valid frame (padded frames have weight 0), so the window is never empty.
        """
        peak = prev_weights.argmax(dim=1, keepdim=True)  # (B, 1); ties -> first frame
        t = torch.arange(prev_weights.shape[1], device=prev_weights.device)
        return (t >= peak - self.cfg.window_back) & (t <= peak + self.cfg.window)


class LocationAttention(Attention):
    """Location-aware attention: content (W s + V h) plus a convolution over the previous weights."""

    def __init__(self, cfg: AttentionConfig, query_dim: int, enc_dim: int) -> None:
        super().__init__(cfg)
        self.key = nn.Linear(enc_dim, cfg.dim)  # V h + b
        self.query = nn.Linear(query_dim, cfg.dim, bias=False)  # W s
        self.conv = nn.Conv1d(1, cfg.conv_channels, cfg.conv_kernel, padding=cfg.conv_kernel // 2, bias=False)
        self.location = nn.Linear(cfg.conv_channels, cfg.dim, bias=False)  # U f
        self.score = nn.Linear(cfg.dim, 1, bias=False)  # w

    def preprocess(self, enc: Tensor) -> Tensor:
        """Keys V h + b: (B, T, D) -> (B, T, A)."""
        return self.key(enc)

    def location_features(self, prev_weights: Tensor, dtype: torch.dtype) -> Tensor:
        """conv(prev) (B, C, T); at inference on CPU, long kernels go through FFTs (same value to ~1e-6)."""
        k = self.cfg.conv_kernel
        if not cpu_inference(prev_weights) or k < FFT_MIN_TAPS:
            return self.conv(prev_weights.unsqueeze(1).to(dtype))
        t = prev_weights.shape[1]
        n = 1 << (t + k - 2).bit_length()  # FFT length >= t + k - 1: no wrap-around
        # conv1d is a cross-correlation: a linear convolution with the flipped kernel, then the
        # k // 2 frames of padding on each side are dropped.
        spec = torch.fft.rfft(prev_weights.float(), n)[:, None, :] * torch.fft.rfft(
            self.conv.weight[:, 0].flip(-1).float(), n)
        return torch.fft.irfft(spec, n)[:, :, k // 2: k // 2 + t].to(dtype)

    def energies(self, query: Tensor, keys: Tensor, prev_weights: Tensor, mask: Tensor | None = None,
                 live: list[int] | None = None) -> Tensor:
        """w^T tanh(W s + V h + U conv(prev) + b): (N, T); at inference on CPU, -sum(w) on padded frames
        and for the queries past `live`."""
        (m, t, a), n = keys.shape, query.shape[0]
        g = n // m
        f = self.location_features(prev_weights, keys.dtype)  # (N, C, T)
        # U f + W s in one batched matmul that adds onto the keys: [f; 1]^T [U^T; W s].
        # Same value as the three separate terms, ~30% less time (no (N, T, A) temporaries).
        f1 = torch.cat([f, f.new_ones(n, 1, t)], dim=1).transpose(1, 2)  # (N, T, C + 1)
        w = torch.cat([self.location.weight.t().expand(n, -1, -1), self.query(query).unsqueeze(1)], dim=1)
        if not cpu_inference(keys):
            if g == 1:
                doubled = torch.baddbmm(keys, f1, w, beta=2.0, alpha=2.0)  # 2 (V h + b + U f + W s): (N, T, A)
            else:
                doubled = torch.bmm(f1, w).view(m, g, t, a).add_(keys.unsqueeze(1)).mul_(2.0).view(n, t, a)
            return score_tanh(self.score, doubled)
        # Blocks of at most `rows` queries with their keys: one memory row per query (g = 1), or
        # the queries of one utterance sharing its keys (g > 1); each over its valid frames only.
        valid = [t] * m if mask is None else mask.sum(dim=1).tolist()
        rows = max(1, INFERENCE_BLOCK // (t * a))
        if g == 1:
            blocks = [(i, min(i + rows, n), keys[i:i + rows], max(valid[i:i + rows])) for i in range(0, n, rows)]
        else:
            rows = min(rows, g)
            ends = [u * g + (g if live is None else live[u]) for u in range(m)]
            blocks = [(i, min(i + rows, ends[u]), keys[u:u + 1], valid[u]) for u in range(m)
                      for i in range(u * g, ends[u], rows)]
        # score_tanh's sigmoid form, its affine part applied once to all blocks at the end.
        out = keys.new_zeros(n, t)
        buf = keys.new_empty(min(rows, n) * t * a)
        score = self.score.weight[0]  # (A,)
        for i, j, key, v in blocks:
            block = buf[: (j - i) * v * a].view(j - i, v, a)
            torch.baddbmm(key[:, :v], f1[i:j, :v], w[i:j], beta=2.0, alpha=2.0, out=block)
            out[i:j, :v] = block.sigmoid_() @ score
        return out.mul_(2.0).sub_(score.sum())


class AdditiveAttention(Attention):
    """Content-only additive attention (Bahdanau); previous weights are ignored."""

    def __init__(self, cfg: AttentionConfig, query_dim: int, enc_dim: int) -> None:
        super().__init__(cfg)
        self.key = nn.Linear(enc_dim, cfg.dim)
        self.query = nn.Linear(query_dim, cfg.dim, bias=False)
        self.score = nn.Linear(cfg.dim, 1, bias=False)

    def preprocess(self, enc: Tensor) -> Tensor:
        """Keys V h + b: (B, T, D) -> (B, T, A)."""
        return self.key(enc)

    def energies(self, query: Tensor, keys: Tensor, prev_weights: Tensor, mask: Tensor | None = None,
                 live: list[int] | None = None) -> Tensor:
        """w^T tanh(W s + V h + b): (N, T)."""
        (m, t, a), n = keys.shape, query.shape[0]
        q = self.query(query).view(m, n // m, 1, a)
        return score_tanh(self.score, torch.add(keys.unsqueeze(1), q).mul_(2.0)).view(n, t)


class DotAttention(Attention):
    """Scaled dot-product attention between projected query and keys; previous weights are ignored."""

    def __init__(self, cfg: AttentionConfig, query_dim: int, enc_dim: int) -> None:
        super().__init__(cfg)
        self.key = nn.Linear(enc_dim, cfg.dim)
        self.query = nn.Linear(query_dim, cfg.dim)
        self.scale = 1.0 / math.sqrt(cfg.dim)

    def preprocess(self, enc: Tensor) -> Tensor:
        """Projected keys V h: (B, T, D) -> (B, T, A)."""
        return self.key(enc)

    def energies(self, query: Tensor, keys: Tensor, prev_weights: Tensor, mask: Tensor | None = None,
                 live: list[int] | None = None) -> Tensor:
        """(W s) . (V h) / sqrt(A): (N, T)."""
        (m, t, a), n = keys.shape, query.shape[0]
        q = self.query(query).view(m, n // m, a)  # (M, g, A)
        return torch.bmm(q, keys.transpose(1, 2)).view(n, t) * self.scale


_KINDS = {"location": LocationAttention, "additive": AdditiveAttention, "dot": DotAttention}


def build_attention(cfg: AttentionConfig, query_dim: int, enc_dim: int) -> Attention:
    """The attention module of kind `cfg.kind` for queries of size query_dim over encodings of size enc_dim."""
    return _KINDS[cfg.kind](cfg, query_dim, enc_dim)
