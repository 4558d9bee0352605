"""Pyramidal BiLSTM listener (Chan et al. 2016, "Listen, Attend and Spell").

Each layer may first shorten time by `k`, then runs a bidirectional LSTM, then
(optionally) projects `2 * hidden -> projection` with tanh between layers
(as ESPnet's `blstmp`). Time is shortened by concatenating `k` adjacent frames
(`subsample: concat`, the LAS paper's pyramid: `(B, T, D) -> (B, T // k, k * D)`;
leftover frames are dropped, an utterance of 7 frames gives 3 after a halving
layer) or by keeping every k-th frame (`subsample: skip`, ESPnet's `blstmp`:
`(B, T, D) -> (B, ceil(T / k), D)`, 7 frames give 4; the skip is taken before the
previous layer's projection, which works frame by frame, so it projects fewer).

Padding never changes an utterance's outputs. Two implementations give the
same numbers and share one state_dict (each layer is one `nn.LSTM(...,
bidirectional=True)`), so a checkpoint moves freely between them:

* "packed": `pack_padded_sequence` into the bidirectional LSTM. Fast with
  cuDNN; on CPU its backward pass is several times slower than the whole rest
  of a training step (bench/listener_options.py).
* "reverse": the forward direction runs over the padded batch (padding comes
  after the valid frames, so valid outputs are exact); the backward direction
  runs over each utterance reversed within its own length (valid frames first,
  padding last), and its outputs are put back in time order. Both directions
  are plain unpacked LSTM calls, the fast path of the CPU (oneDNN) kernels.

"auto" picks "packed" on CUDA and "reverse" elsewhere.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from asr.errors import AsrError

Impl = Literal["auto", "reverse", "packed"]
Subsample = Literal["concat", "skip"]


class ListenerInputError(AsrError):
    """An utterance is too short for the listener's time reduction."""


@dataclass(frozen=True)
class ListenerConfig:
    """Shape of the pyramidal BiLSTM encoder."""

    input_dim: int = 0  # feature dimension F; 0 = set from the front-end by build_las
    layers: int = 3  # BiLSTM layers
    hidden: int = 320  # LSTM units per direction
    # Frames concatenated before each layer (1 = none, 2 = halve time), one entry per layer.
    # Default x4 overall: with character targets and joint CTC, x8 (80 ms frames) leaves too few
    # frames for fast speech (CTC needs at least one frame per character plus repeats).
    reduce: tuple[int, ...] = (1, 2, 2)
    projection: int = 320  # Linear(2*hidden -> projection) after every layer (tanh except the last); 0 = none
    dropout: float = 0.0  # dropout on every layer's output except the last
    impl: Impl = "auto"  # "reverse" | "packed" | "auto" (packed on CUDA, reverse elsewhere); same results
    subsample: Subsample = "concat"  # how `reduce` shortens time: "concat" k frames into one, or "skip" to every k-th
    # Convolutional stem before the BiLSTMs (ESPnet's vggblstm front, the Conformer's
    # Conv2dSubsampling): two 3x3 convolutions of stride 2 over (time, frequency) with this many
    # channels and ReLU, then Linear to `hidden`; time / 4 before `reduce`. 0 = none.
    conv_stem: int = 0

    def __post_init__(self) -> None:
        if self.input_dim < 0 or self.layers < 1 or self.hidden < 1 or self.projection < 0:
            raise ValueError(f"listener: bad sizes in {self}")
        if len(self.reduce) != self.layers or any(k < 1 for k in self.reduce):
            raise ValueError(f"listener: reduce needs one factor >= 1 per layer ({self.layers}), got {self.reduce}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"listener: dropout must be in [0, 1), got {self.dropout}")
        if self.subsample not in ("concat", "skip"):
            raise ValueError(f"listener: subsample must be 'concat' or 'skip', got {self.subsample!r}")
        if self.conv_stem < 0:
            raise ValueError(f"listener: conv_stem must be >= 0, got {self.conv_stem}")

    @property
    def output_dim(self) -> int:
        """Feature size D of the listener output."""
        return self.projection or 2 * self.hidden

    @property
    def total_reduction(self) -> int:
        """Input frames per output frame."""
        return (STEM_REDUCTION if self.conv_stem else 1) * math.prod(self.reduce)

    @property
    def min_frames(self) -> int:
        """Shortest input that leaves an output frame."""
        pyramid = math.prod(self.reduce) if self.subsample == "concat" else 1  # frames the BiLSTMs need
        return STEM_REDUCTION * (pyramid - 1) + STEM_MIN_FRAMES if self.conv_stem else pyramid


STEM_REDUCTION = 4  # time reduction of the convolutional stem
STEM_MIN_FRAMES = 7  # shortest input that leaves one stem output frame


class ConvStem(nn.Module):
    """Two 3x3 stride-2 convolutions with ReLU over (time, frequency), then Linear: (B, T, F) -> (B, T', D).

    T' = ((T - 1) // 2 - 1) // 2 (no padding, so a frame never sees the padding of a shorter
    utterance); F is reduced the same way before the Linear.
    """

    def __init__(self, input_dim: int, channels: int, output_dim: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(),
                                   nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU())
        freq = ((input_dim - 1) // 2 - 1) // 2
        self.linear = nn.Linear(channels * freq, output_dim)

    @staticmethod
    def out_lengths(lengths: Tensor) -> Tensor:
        """Output frames of inputs of `lengths` frames."""
        return torch.div(torch.div(lengths - 1, 2, rounding_mode="floor") - 1, 2, rounding_mode="floor")

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        y = self.convs(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = y.shape
        return self.linear(y.transpose(1, 2).reshape(b, t, c * f)), self.out_lengths(lengths)  # (B, T', D)


def time_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean (B, T) mask, True on valid frames."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)


def stack_frames(x: Tensor, lengths: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Concatenate k adjacent frames: (B, T, D) -> (B, T // k, k * D); leftover frames are dropped."""
    b, t, d = x.shape
    t2 = t // k
    return x[:, : t2 * k].reshape(b, t2, k * d), torch.div(lengths, k, rounding_mode="floor")


def skip_frames(x: Tensor, lengths: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Keep every k-th frame, from the first: (B, T, D) -> (B, ceil(T / k), D)."""
    return x[:, ::k], torch.div(lengths + k - 1, k, rounding_mode="floor")


def reverse_index(lengths: Tensor, max_len: int) -> Tensor:
    """(B, T) time indices that reverse each sequence within its length and keep padding in place.

    The permutation is its own inverse, so the same index puts reversed outputs back in order.
    """
    t = torch.arange(max_len, device=lengths.device).unsqueeze(0)  # (1, T)
    last = lengths.unsqueeze(1) - 1  # (B, 1)
    return torch.where(t <= last, last - t, t)


def _direction_weights(rnn: nn.LSTM, suffix: str) -> list[Tensor]:
    """[w_ih, w_hh, b_ih, b_hh] of one direction of a one-layer LSTM ('' or '_reverse')."""
    return [getattr(rnn, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def _lstm_one_direction(rnn: nn.LSTM, x: Tensor, suffix: str) -> Tensor:
    """Run one direction of `rnn` as a unidirectional LSTM over (B, T, D) -> (B, T, H)."""
    h0 = x.new_zeros(1, x.shape[0], rnn.hidden_size)
    out, _, _ = torch.lstm(x, (h0, h0), _direction_weights(rnn, suffix), True, 1, 0.0, rnn.training, False, True)
    return out


def birnn_reverse(rnn: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """Exact bidirectional LSTM over a right-padded batch without packing: (B, T, D) -> (B, T, 2H)."""
    b, t, d = x.shape
    idx = reverse_index(lengths, t).unsqueeze(-1)  # (B, T, 1)
    fwd = _lstm_one_direction(rnn, x, "")  # (B, T, H)
    bwd = _lstm_one_direction(rnn, x.gather(1, idx.expand(b, t, d)), "_reverse")  # reversed time
    bwd = bwd.gather(1, idx.expand(b, t, rnn.hidden_size))  # back in time order
    return torch.cat([fwd, bwd], dim=-1)


def birnn_packed(rnn: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """Bidirectional LSTM over packed sequences: (B, T, D) -> (B, T, 2H), padded outputs 0."""
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    with warnings.catch_warnings():
        if rnn.weight_ih_l0.dtype == torch.bfloat16:
            # cuDNN packs a bfloat16 LSTM's weights into one block at every call (torch's
            # flatten_parameters refuses bfloat16): a copy of a few MB, small beside the batch.
            # In float32 the warning stays: there it points at weights that could be flattened.
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
        out, _ = rnn(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


def birnn_unpacked(rnn: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """Plain bidirectional LSTM over padding (INEXACT backward direction); for benchmarks only."""
    return rnn(x)[0]


_IMPLS = {"reverse": birnn_reverse, "packed": birnn_packed, "unpacked": birnn_unpacked}


class Listener(nn.Module):
    """Pyramidal BiLSTM encoder: features (B, T, F) -> encodings (B, T', D), T' = T // total_reduction.

    >>> listener = Listener(ListenerConfig(input_dim=4, layers=2, hidden=3, reduce=(1, 2), projection=0))
    >>> out, lengths = listener(torch.randn(2, 9, 4), torch.tensor([9, 5]))
    >>> tuple(out.shape), lengths.tolist()
    ((2, 4, 6), [4, 2])
    """

    def __init__(self, cfg: ListenerConfig) -> None:
        super().__init__()
        if cfg.input_dim < 1:
            raise ValueError("listener: input_dim must be set (build_las sets it from the front-end)")
        self.cfg = cfg
        self.rnns = nn.ModuleList()
        self.projections = nn.ModuleList()
        dim = cfg.input_dim
        self.stem = ConvStem(dim, cfg.conv_stem, cfg.hidden) if cfg.conv_stem else None
        if self.stem is not None:
            dim = cfg.hidden
        for k in cfg.reduce:
            self.rnns.append(nn.LSTM(dim * k if cfg.subsample == "concat" else dim, cfg.hidden, batch_first=True,
                                     bidirectional=True))
            dim = 2 * cfg.hidden
            if cfg.projection:
                self.projections.append(nn.Linear(dim, cfg.projection))
                dim = cfg.projection
        self.dropout = nn.Dropout(cfg.dropout)

    @property
    def output_dim(self) -> int:
        """Feature size D of the output."""
        return self.cfg.output_dim

    def impl_for(self, device: torch.device) -> str:
        """The implementation "auto" resolves to on `device`."""
        if self.cfg.impl != "auto":
            return self.cfg.impl
        return "packed" if device.type == "cuda" else "reverse"

    def forward(self, x: Tensor, lengths: Tensor, impl: str | None = None) -> tuple[Tensor, Tensor]:
        """Encode (B, T, F) padded features with (B,) lengths -> ((B, T', D), (B,) lengths).

        `impl` overrides the configured implementation (benchmarks, tests). Padded output frames are 0.
        """
        if x.dim() != 3 or x.shape[-1] != self.cfg.input_dim or lengths.shape != x.shape[:1]:
            raise ValueError(f"listener: expected (B, T, {self.cfg.input_dim}) and (B,) lengths, "
                             f"got {tuple(x.shape)} and {tuple(lengths.shape)}")
        _check_lengths(lengths, x.shape[1], self.cfg.min_frames)
        run = _IMPLS[impl or self.impl_for(x.device)]
        lengths = lengths.to(device=x.device, dtype=torch.long)
        if self.stem is not None:
            x, lengths = self.stem(x, lengths)
            x = x.masked_fill(~time_mask(lengths, x.shape[1]).unsqueeze(-1), 0.0)
        reduce, skip = self.cfg.reduce, self.cfg.subsample == "skip"
        last = len(self.rnns) - 1
        for i, rnn in enumerate(self.rnns):
            if reduce[i] > 1 and not (skip and i > 0):  # a later layer's skip came before the projection
                x, lengths = (skip_frames if skip else stack_frames)(x, lengths, reduce[i])
            y = run(rnn, x, lengths)  # (B, T, 2H)
            if skip and i < last and reduce[i + 1] > 1:
                y, lengths = skip_frames(y, lengths, reduce[i + 1])
            if self.projections:
                y = self.projections[i](y)  # (B, T, P)
                if i < last:
                    y = torch.tanh(y)
            if i < last:
                y = self.dropout(y)
            x = y.masked_fill(~time_mask(lengths, y.shape[1]).unsqueeze(-1), 0.0)
        return x, lengths


def _check_lengths(lengths: Tensor, max_len: int, reduction: int) -> None:
    """Every length must fit the padded tensor and survive the time reduction (`reduction` frames)."""
    lo, hi = (int(v) for v in torch.aminmax(lengths))
    if hi > max_len:
        raise ValueError(f"listener: a length ({hi}) exceeds the padded time axis ({max_len})")
    if lo < reduction:
        i = int(torch.argmin(lengths))
        raise ListenerInputError(
            f"utterance {i} of the batch has {lo} frames; the listener needs at least {reduction} "
            f"(its time reduction)")
