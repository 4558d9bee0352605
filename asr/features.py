"""Feature front-end: padded waveform batches -> (training: silence padding) -> log-mel / MFCC -> (training: VTLP)
-> CMVN -> SpecAugment.

Every module here takes a zero-padded batch and its lengths and returns features
and their lengths, `forward(waves (B, N), lengths (B,)) -> (feats (B, T, F), frame_lengths (B,))`,
runs on whatever device its input is on, and leaves frames past an utterance's
end at zero, so padding never changes the frames of a shorter utterance.

Scaling convention: waves are floats in [-1, 1]. Kaldi computes features on
int16 sample values, so `Fbank` and `MFCC` multiply by `input_scale` (32768)
first; their output then equals `torchaudio.compliance.kaldi.fbank(wave * 32768)`
(and Kaldi's compute-fbank-feats on the int16 file). `LibrosaMel` follows
librosa and uses the waves as they are.

Frame counts follow Kaldi with snip_edges=True: an utterance of n samples has
0 frames if n < window, else 1 + (n - window) // shift. T = frames(N) of the
padded length N.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Literal

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor, nn

from asr.level_noise import LevelNoise, LevelNoiseConfig
from asr.silence_pad import SilencePad, SilencePadConfig
from asr.vtlp import VTLP, VTLPConfig

FLT_EPSILON = torch.finfo(torch.float32).eps  # Kaldi's floor on mel energies before the log
INT16_SCALE = 32768.0  # [-1, 1] floats -> int16 sample values
CPU_CHUNK_FRAMES = 512  # frames per CPU chunk and intra-op thread (about 1 MB of FFT input: stays in cache)
STD_FLOOR = 1e-3  # CMVN: smallest standard deviation divided by
WINDOWS = ("povey", "hanning", "hamming", "rectangular", "blackman")


@dataclass(frozen=True)
class FeatureConfig:
    """What features to compute; defaults are Kaldi's 80-bin fbank at 16 kHz without dither."""

    kind: Literal["fbank", "mfcc", "librosa_mel"] = "fbank"  # which module `build_features` makes
    sample_rate: int = 16000  # Hz of the input waves
    n_mels: int = 80  # mel bands (Kaldi num-mel-bins); 23 (Kaldi's mfcc default) or 40 are usual for mfcc
    n_mfcc: int = 13  # mfcc: cepstra kept, C0 included (Kaldi num-ceps)
    frame_length_ms: float = 25.0  # analysis window length
    frame_shift_ms: float = 10.0  # hop between frames
    window: Literal["povey", "hanning", "hamming", "rectangular", "blackman"] = "povey"  # fbank/mfcc window
    round_to_power_of_two: bool = True  # FFT size: next power of two >= window (else the window length)
    low_freq: float = 20.0  # low edge of the first mel band, Hz
    high_freq: float = 0.0  # high edge of the last mel band, Hz; <= 0 means Nyquist + high_freq (Kaldi)
    preemphasis: float = 0.97  # fbank/mfcc: x[j] -= p * x[j-1] inside each frame (Kaldi)
    remove_dc_offset: bool = True  # fbank/mfcc: subtract each frame's mean first (Kaldi)
    dither: float = 0.0  # fbank/mfcc: std of Gaussian noise added to each frame, in int16 units, training mode only
    input_scale: float = INT16_SCALE  # fbank/mfcc: waves are multiplied by this (int16 units, as Kaldi); 1.0 keeps them
    energy_floor: float = 1.0  # mfcc: floor on the frame energy replacing C0 (Kaldi's advice when dither is 0)
    mel_floor: float = 0.0  # fbank/mfcc: floor on mel energies before the log, int16 units (0 = Kaldi's FLT_EPSILON);
    # ~50 is the level of one-LSB noise: digital silence and sub-LSB codec noise then read alike
    use_energy: bool = True  # mfcc: replace C0 by the log frame energy (Kaldi default)
    raw_energy: bool = True  # mfcc: energy before preemphasis and window (Kaldi default)
    cepstral_lifter: float = 22.0  # mfcc: lifter coefficient Q (0 = none)
    deltas: bool = False  # append delta and delta-delta (Kaldi add-deltas: order 2, window 2), tripling F
    log_offset: float = 1e-6  # librosa_mel: log(power + log_offset)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        window, shift = frame_sizes(self)
        if window < 2 or shift < 1:
            raise ValueError(f"frame_length_ms/frame_shift_ms give a window of {window} and shift of {shift} samples")
        if fft_size(self) % 2:
            raise ValueError(f"the FFT size {fft_size(self)} must be even: use round_to_power_of_two")
        nyquist = self.sample_rate / 2
        high = self.high_hz
        if not (0 <= self.low_freq < high <= nyquist):
            raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist:g} Hz, got {self.low_freq:g} and {high:g}")
        if self.n_mels < 4:
            raise ValueError(f"n_mels must be at least 4, got {self.n_mels}")
        if self.kind == "mfcc" and not 1 <= self.n_mfcc <= self.n_mels:
            raise ValueError(f"n_mfcc must be in [1, n_mels={self.n_mels}], got {self.n_mfcc}")
        if not 0.0 <= self.preemphasis <= 1.0:
            raise ValueError(f"preemphasis must be in [0, 1], got {self.preemphasis}")
        if self.dither < 0 or self.input_scale <= 0 or self.log_offset < 0 or not self.mel_floor >= 0:
            raise ValueError("dither, log_offset and mel_floor must be >= 0 and input_scale > 0")

    @property
    def high_hz(self) -> float:
        """The high edge of the last mel band in Hz (high_freq <= 0 counts down from the Nyquist frequency)."""
        return self.high_freq if self.high_freq > 0 else self.sample_rate / 2 + self.high_freq


def frame_sizes(cfg: FeatureConfig) -> tuple[int, int]:
    """(window, shift) in samples, truncated like Kaldi."""
    window = int(cfg.sample_rate * cfg.frame_length_ms * 0.001)
    shift = int(cfg.sample_rate * cfg.frame_shift_ms * 0.001)
    return window, shift


def fft_size(cfg: FeatureConfig) -> int:
    """FFT length: the window, rounded up to a power of two if configured."""
    window, _ = frame_sizes(cfg)
    return 1 << (window - 1).bit_length() if cfg.round_to_power_of_two else window


def num_frames(lengths: Tensor, window: int, shift: int) -> Tensor:
    """Kaldi frame counts (snip_edges=True): 0 if n < window else 1 + (n - window) // shift."""
    return torch.where(lengths >= window, torch.div(lengths - window, shift, rounding_mode="floor") + 1, 0)


def zero_padding_(feats: Tensor, frame_lengths: Tensor) -> Tensor:
    """Set frames t >= frame_lengths[b] of feats (B, T, ...) to zero, in place."""
    if feats.device.type == "cpu":  # a slice fill per utterance beats a broadcast mask on CPU
        for b, n in enumerate(frame_lengths.tolist()):
            feats[b, n:] = 0.0
        return feats
    mask = ~frame_mask(frame_lengths, feats.shape[1])
    return feats.masked_fill_(mask.view(*mask.shape, *([1] * (feats.dim() - 2))), 0.0)


def frame_mask(frame_lengths: Tensor, max_frames: int) -> Tensor:
    """(B, T) bool, True on the valid frames of each utterance."""
    return torch.arange(max_frames, device=frame_lengths.device) < frame_lengths.unsqueeze(1)


# --------------------------------------------------------------------------------------------
# Kaldi tables, computed once in float64


def kaldi_window(kind: str, length: int) -> Tensor:
    """Kaldi's frame window (float64), as in feature-window.cc."""
    a = 2 * math.pi / (length - 1)
    j = torch.arange(length, dtype=torch.float64)
    if kind == "povey":
        return (0.5 - 0.5 * torch.cos(a * j)).pow(0.85)
    if kind == "hanning":
        return 0.5 - 0.5 * torch.cos(a * j)
    if kind == "hamming":
        return 0.54 - 0.46 * torch.cos(a * j)
    if kind == "rectangular":
        return torch.ones(length, dtype=torch.float64)
    if kind == "blackman":
        return 0.42 - 0.5 * torch.cos(a * j) + 0.08 * torch.cos(2 * a * j)
    raise ValueError(f"unknown window {kind!r} (one of {WINDOWS})")


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float) -> Tensor:
    """Kaldi's triangular mel filters, (n_fft // 2 + 1, n_mels) float64; the Nyquist row is zero."""
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq

    def mel(f: Tensor | float) -> Tensor:
        return 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)

    lo_mel, hi_mel = mel(low_freq), mel(high)
    delta = (hi_mel - lo_mel) / (n_mels + 1)
    b = torch.arange(n_mels, dtype=torch.float64).unsqueeze(1)  # (M, 1)
    left, center, right = lo_mel + b * delta, lo_mel + (b + 1) * delta, lo_mel + (b + 2) * delta
    bins = mel(torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft)).unsqueeze(0)  # (1, K-1)
    up = (bins - left) / (center - left)
    down = (right - bins) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (M, K-1)
    return F.pad(banks, (0, 1)).T.contiguous()  # (K, M)


def kaldi_dct(n_ceps: int, n_mels: int, lifter: float) -> Tensor:
    """Kaldi's DCT-II (orthonormal, C0 scaled by sqrt(1/M)) with the lifter folded in, (M, C) float64."""
    k = torch.arange(n_ceps, dtype=torch.float64)
    n = torch.arange(n_mels, dtype=torch.float64).unsqueeze(1)
    dct = torch.cos(math.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)  # (M, C)
    dct[:, 0] = math.sqrt(1.0 / n_mels)
    if lifter:
        dct = dct * (1.0 + 0.5 * lifter * torch.sin(math.pi * k / lifter))
    return dct


def kaldi_delta_scales(order: int = 2, window: int = 2) -> list[list[float]]:
    """Filter taps of each delta order (order 0 = [1.0]), as Kaldi's DeltaFeatures builds them."""
    scales = [[1.0]]
    normalizer = 2 * sum(j * j for j in range(1, window + 1))
    for _ in range(order):
        prev = scales[-1]
        cur = [0.0] * (len(prev) + 2 * window)
        for j in range(-window, window + 1):
            for k, s in enumerate(prev):
                cur[j + k + window] += j * s / normalizer
        scales.append(cur)
    return scales


def add_deltas(feats: Tensor, frame_lengths: Tensor, order: int = 2, window: int = 2) -> Tensor:
    """Append deltas up to `order` as Kaldi's add-deltas: (B, T, F) -> (B, T, F * (order + 1)).

    Each utterance's edges are replicated at its own last valid frame, so padding never leaks in.
    """
    scales = kaldi_delta_scales(order, window)
    reach = len(scales[-1]) // 2
    B, T, _ = feats.shape
    t = torch.arange(T, device=feats.device)
    last = (frame_lengths - 1).clamp(min=0).unsqueeze(1)  # (B, 1)
    outs = [feats] + [torch.zeros_like(feats) for _ in range(order)]
    for off in range(-reach, reach + 1):
        idx = torch.minimum((t + off).clamp(min=0).unsqueeze(0), last)  # (B, T)
        shifted = torch.gather(feats, 1, idx.unsqueeze(-1).expand_as(feats))
        for i in range(1, order + 1):
            half = len(scales[i]) // 2
            if abs(off) <= half and scales[i][off + half] != 0.0:
                outs[i].add_(shifted, alpha=scales[i][off + half])
    return torch.cat(outs, dim=-1)


# --------------------------------------------------------------------------------------------
# Kaldi-compatible fbank and MFCC


class Fbank(nn.Module):
    """Kaldi-compatible log-mel filterbank over a padded batch (B, N) -> (B, T, n_mels).

    Equals `torchaudio.compliance.kaldi.fbank(wave * input_scale, ...)` per utterance
    (povey window, DC removal, preemphasis, power spectrum, FFT size a power of two,
    Kaldi mel banks, log with a FLT_EPSILON floor), to float32 rounding.

    How it is fast: the batch is framed as a strided view, preemphasis runs once
    over the signal (not over the 2.5x larger overlapping frames) and the per-frame
    DC removal is folded in as `(z - mean * (1 - p)) * window`, which is Kaldi's
    order (remove DC, preemphasise, window) rearranged; frame means come from
    sums of blocks shared by overlapping frames. One rfft transforms all frames.
    On CPU the mel filters (95 % zeros) are a sparse matrix applied to the
    transposed power spectrum, and frames go through in cache-sized chunks.
    """

    def __init__(self, cfg: FeatureConfig = FeatureConfig(), dtype: torch.dtype = torch.float32) -> None:
        """`dtype` float64 gives reference-grade output (tables and arithmetic in double precision)."""
        super().__init__()
        self.cfg = cfg
        self.window_size, self.shift = frame_sizes(cfg)
        self.n_fft = fft_size(cfg)
        window = kaldi_window(cfg.window, self.window_size)
        # The int16 scale is folded into the window: spectra come out in int16 units.
        self.register_buffer("window", (window * cfg.input_scale).to(dtype), persistent=False)  # (W,)
        banks = kaldi_mel_banks(cfg.n_mels, self.n_fft, cfg.sample_rate, cfg.low_freq, cfg.high_freq)  # (K, M)
        self.register_buffer("mel_banks", banks.to(dtype), persistent=False)  # (K, M)
        self.block = math.gcd(self.window_size, self.shift)  # frame sums are sums of blocks of this many samples
        self._sparse_mel: Tensor | None = None  # (M, K) sparse copy of mel_banks.T, made on first CPU use
        self.first_weight = float(window[0] * cfg.input_scale)  # scaled window at column 0 (0 for povey, hanning)
        self.cpu_chunks = True  # CPU: cache-sized chunks and a sparse mel product (False: the one-pass GPU path)
        self.mel_floor = max(cfg.mel_floor, FLT_EPSILON)  # mel energies below it read as it

    @property
    def output_dim(self) -> int:
        """Feature dimension F of the output."""
        return self.cfg.n_mels * (3 if self.cfg.deltas else 1)

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N) waves, (B,) lengths in samples -> (B, T, F) features, (B,) frame lengths."""
        feats, _, frame_lengths = self._log_mel(waves, lengths, with_energy=False)
        return self._finish(feats, frame_lengths), frame_lengths

    def _finish(self, feats: Tensor, frame_lengths: Tensor) -> Tensor:
        """Append deltas if configured, and zero the padded frames."""
        if self.cfg.deltas:
            feats = add_deltas(feats, frame_lengths)  # reads valid frames only
        return zero_padding_(feats, frame_lengths)

    def _log_mel(self, waves: Tensor, lengths: Tensor, with_energy: bool) -> tuple[Tensor, Tensor | None, Tensor]:
        """Log-mel energies (B, T, M), log frame energies (B, T) or None, frame lengths (B,).

        Frames past an utterance's end are left undefined here (`_finish` zeroes them).
        """
        waves, lengths = _check_batch(waves, lengths, self.window.dtype)
        B, N = waves.shape
        W, S = self.window_size, self.shift
        frame_lengths = num_frames(lengths, W, S)
        T = 1 + (N - W) // S if N >= W else 0
        out = waves.new_empty(B, T, self.cfg.n_mels)
        energy = waves.new_empty(B, T) if with_energy else None
        if T == 0:
            return out, energy, frame_lengths
        dither = self.cfg.dither if self.training else 0.0
        x = waves[:, : (T - 1) * S + W]  # the samples the frames cover
        with torch.autocast(waves.device.type, enabled=False):
            if energy is not None and self.cfg.raw_energy and dither == 0.0:
                energy.copy_(self._raw_log_energy(x, T))
                energy_in_pass = None
            else:
                energy_in_pass = energy
            parts = self._frame_parts(x, T)
            if waves.device.type == "cpu" and self.cpu_chunks:
                self._cpu_pass(x, parts, frame_lengths.tolist(), out, energy_in_pass, dither)
            else:
                self._batch_pass(x, parts, out, energy_in_pass, dither)
        return out, energy, frame_lengths

    def _frame_parts(self, x: Tensor, T: int) -> tuple[Tensor | None, Tensor | None]:
        """Per-frame values for all T frames of x (B, n): what DC removal subtracts from each
        preemphasised body, `mean * (1 - p)` (B, T) or None, and column 0 of the windowed
        frames (B, T) where the window is not zero there (Kaldi preemphasises the first
        sample against itself), else None."""
        W, S, p = self.window_size, self.shift, self.cfg.preemphasis
        mean = self._frame_sums(x, T).mul_(1.0 / W) if self.cfg.remove_dc_offset else None
        offset = None if mean is None else mean * (1.0 - p)
        first = None
        if p != 0.0 and self.first_weight != 0.0:
            first = x[:, : (T - 1) * S + 1 : S]
            first = (first if mean is None else first - mean) * ((1.0 - p) * self.first_weight)
        return offset, first

    def _bodies(self, x: Tensor, t0: int, t1: int) -> Tensor:
        """Frames t0..t1 of waves x (..., n) as a strided view (..., t1 - t0, W - 1) of the
        preemphasised signal z[i] = x[i + 1] - p x[i] (column j >= 1 of frame t is z[t S + j - 1]),
        or (..., t1 - t0, W) of x itself without preemphasis."""
        W, S, p = self.window_size, self.shift, self.cfg.preemphasis
        seg = x[..., t0 * S : (t1 - 1) * S + W]
        if p == 0.0:
            return seg.unfold(-1, W, S)
        return torch.add(seg[..., 1:], seg[..., :-1], alpha=-p).unfold(-1, W - 1, S)

    def _body(self, frames: Tensor) -> Tensor:
        """The columns of the FFT buffer (..., n_fft) that hold the preemphasised samples."""
        return frames[..., 1 : self.window_size] if self.cfg.preemphasis != 0.0 else frames[..., : self.window_size]

    def _window(self, frames: Tensor, has_first: bool) -> None:
        """Window the bodies in place and zero the FFT padding (and column 0 unless it is set)."""
        if self.cfg.preemphasis != 0.0:
            frames[..., 1 : self.window_size].mul_(self.window[1:])
            if not has_first:
                frames[..., 0] = 0.0
        else:
            frames[..., : self.window_size].mul_(self.window)
        frames[..., self.window_size :] = 0.0

    def _batch_pass(self, x: Tensor, parts: tuple, out: Tensor, energy: Tensor | None, dither: float) -> None:
        """Every frame of the padded batch at once, dense mel matmul (the GPU path)."""
        offset, first = parts
        B, T = x.shape[0], 1 + (x.shape[1] - self.window_size) // self.shift
        frames = x.new_empty(B, T, self.n_fft)  # windowed frames, zero-padded to the FFT size
        _put(self._body(frames), self._bodies(x, 0, T), offset)
        if first is not None:
            frames[..., 0] = first
        self._window(frames, first is not None)
        noise = self._dither(frames, dither) if dither > 0.0 else None
        if energy is not None:
            raw = x.unfold(1, self.window_size, self.shift)[:, :T] if self.cfg.raw_energy else None
            energy.copy_(self._log_energy(frames, raw, noise))
        out.copy_(self._log_mel_rows(frames.view(B * T, -1), sparse=False).view(B, T, -1))

    def _cpu_pass(self, x: Tensor, parts: tuple, counts: list[int], out: Tensor, energy: Tensor | None, dither: float) -> None:
        """Valid frames only, packed utterance after utterance into cache-sized chunks (the CPU path)."""
        offset, first = parts
        W, S = self.window_size, self.shift
        # Each intra-op thread works on its share of a chunk: the chunk grows with the threads.
        for pieces in _pack(counts, CPU_CHUNK_FRAMES * torch.get_num_threads()):  # [(utterance, t0, t1)]
            R = sum(t1 - t0 for _, t0, t1 in pieces)
            frames = _scratch("frames", (R, self.n_fft), x.dtype)
            body, row = self._body(frames), 0
            for b, t0, t1 in pieces:  # preemphasis per piece: no signal-sized temporaries
                _put(body[row : row + t1 - t0], self._bodies(x[b], t0, t1), None if offset is None else offset[b, t0:t1])
                if first is not None:
                    frames[row : row + t1 - t0, 0] = first[b, t0:t1]
                row += t1 - t0
            self._window(frames, first is not None)
            noise = self._dither(frames, dither) if dither > 0.0 else None
            log_energy = None
            if energy is not None:
                raw = None
                if self.cfg.raw_energy:
                    raw = torch.cat([x[b].unfold(0, W, S)[t0:t1] for b, t0, t1 in pieces])
                log_energy = self._log_energy(frames, raw, noise)
            mel, row = self._log_mel_rows(frames, sparse=True), 0  # (R, M)
            for b, t0, t1 in pieces:
                out[b, t0:t1] = mel[row : row + t1 - t0]
                if log_energy is not None:
                    energy[b, t0:t1] = log_energy[row : row + t1 - t0]
                row += t1 - t0

    def _log_mel_rows(self, frames: Tensor, sparse: bool) -> Tensor:
        """Windowed frames (R, n_fft) -> log-mel energies (R, M)."""
        R, K = frames.shape[0], self.n_fft // 2 + 1
        spectrum = torch.fft.rfft(frames)
        squares = torch.view_as_real(spectrum).square_()  # (R, K, 2): re^2, im^2
        re, im = squares[..., 0], squares[..., 1]
        if not sparse:
            return (torch.add(re, im) @ self.mel_banks).clamp_min_(self.mel_floor).log_()
        # CPU: the mel filters are a sparse matrix applied to the transposed power spectrum
        power_t = torch.add(re.T, im.T, out=_scratch("power", (K, R), frames.dtype))  # (K, R)
        mel_t = torch.sparse.mm(self._sparse_mel_banks(), power_t).clamp_min_(self.mel_floor).log_()  # (M, R)
        # copy_ of a transposed matrix into a contiguous one is a blocked transpose
        return _scratch("mel", (R, mel_t.shape[0]), frames.dtype).copy_(mel_t.T)

    def _sparse_mel_banks(self) -> Tensor:
        """(M, K) sparse COO copy of the mel filters, rebuilt if the buffers changed dtype."""
        if self._sparse_mel is None or self._sparse_mel.dtype != self.mel_banks.dtype:
            self._sparse_mel = self.mel_banks.T.to_sparse().coalesce()
        return self._sparse_mel

    def _frame_sums(self, x: Tensor, T: int, power: int = 1) -> Tensor:
        """Sum of the samples (power 1) or of their squares (power 2) of each frame, (B, T).

        Frames overlap, so they are summed from sums of blocks of gcd(window, shift) samples.
        """
        g, W, S = self.block, self.window_size, self.shift
        B = x.shape[0]
        nb = ((T - 1) * S + W) // g
        blocks = x[:, : nb * g]
        if power == 2:
            blocks = blocks.square()
        sums = blocks.reshape(B, nb, g).sum(-1)  # (B, nb)
        return sums.unfold(1, W // g, S // g)[:, :T].sum(-1)

    def _dither(self, frames: Tensor, dither: float) -> Tensor:
        """Add Gaussian noise (int16 units) to each frame as Kaldi does, before DC removal; returns the noise (..., W)."""
        W = self.window_size
        noise = torch.randn(*frames.shape[:-1], W, device=frames.device, dtype=frames.dtype)
        noise.mul_(dither / self.cfg.input_scale)
        # Noise goes through the same linear steps as the signal: DC removal, preemphasis, window.
        if self.cfg.remove_dc_offset:
            processed = noise - noise.mean(-1, keepdim=True)
        else:
            processed = noise
        p = self.cfg.preemphasis
        if p != 0.0:
            processed = processed - p * torch.cat([processed[..., :1], processed[..., :-1]], dim=-1)
        frames[..., :W] += processed * self.window
        return noise

    def _raw_log_energy(self, x: Tensor, T: int) -> Tensor:
        """Kaldi's raw log energy (before preemphasis and window) of every frame of x (B, n), (B, T)."""
        # sum (x - m)^2 = sum x^2 - (sum x)^2 / W, in float64 so that a DC offset does not cancel digits
        x64 = x.double()
        energy = self._frame_sums(x64, T, power=2)
        if self.cfg.remove_dc_offset:
            energy = energy - self._frame_sums(x64, T).square() / self.window_size
        return self._floor_log((energy * self.cfg.input_scale**2).to(x.dtype))

    def _log_energy(self, frames: Tensor, raw: Tensor | None, noise: Tensor | None) -> Tensor:
        """Log energy of windowed frames (..., n_fft), or with `raw` (..., W) of the raw frames plus `noise`."""
        if raw is None:
            return self._floor_log(frames.square().sum(-1))  # the FFT padding is zero; int16 units already
        f = raw if noise is None else raw + noise
        if self.cfg.remove_dc_offset:
            f = f - f.mean(-1, keepdim=True)
        return self._floor_log(f.square().sum(-1) * self.cfg.input_scale**2)

    def _floor_log(self, energy: Tensor) -> Tensor:
        """log(max(energy, FLT_EPSILON)), then at least log(energy_floor) as Kaldi."""
        log_energy = energy.clamp_min(FLT_EPSILON).log()
        if self.cfg.energy_floor > 0.0:
            log_energy = log_energy.clamp_min(math.log(self.cfg.energy_floor))
        return log_energy


class MFCC(Fbank):
    """Kaldi-compatible MFCC (B, N) -> (B, T, n_mfcc), equal to `torchaudio.compliance.kaldi.mfcc`.

    Log-mel energies times Kaldi's DCT with the cepstral lifter folded in; C0 replaced
    by the log frame energy when `use_energy` (Kaldi's default, torchaudio's is False).
    """

    def __init__(self, cfg: FeatureConfig = FeatureConfig(kind="mfcc", n_mels=23), dtype: torch.dtype = torch.float32) -> None:
        super().__init__(cfg, dtype)
        dct = kaldi_dct(cfg.n_mfcc, cfg.n_mels, cfg.cepstral_lifter)
        self.register_buffer("dct", dct.to(dtype), persistent=False)  # (M, C)

    @property
    def output_dim(self) -> int:
        """Feature dimension F of the output."""
        return self.cfg.n_mfcc * (3 if self.cfg.deltas else 1)

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N) waves, (B,) lengths in samples -> (B, T, F) cepstra, (B,) frame lengths."""
        log_mel, energy, frame_lengths = self._log_mel(waves, lengths, with_energy=self.cfg.use_energy)
        with torch.autocast(waves.device.type, enabled=False):
            ceps = log_mel @ self.dct  # (B, T, C)
        if energy is not None:
            ceps[..., 0] = energy
        return self._finish(ceps, frame_lengths), frame_lengths


# --------------------------------------------------------------------------------------------
# librosa-convention log-mel


class LibrosaMel(nn.Module):
    """librosa-convention log-mel (B, N) -> (B, T, n_mels): log(melspectrogram + log_offset).

    As `librosa.feature.melspectrogram(y, sr, n_fft, hop_length=shift, win_length=window,
    window="hann", center=True, pad_mode="constant", power=2, n_mels, fmin=low_freq,
    fmax=high_freq, htk=False, norm="slaney")`. With center=True an utterance of n
    samples has 1 + n // shift frames (librosa's count, not Kaldi's).
    """

    def __init__(self, cfg: FeatureConfig = FeatureConfig(kind="librosa_mel")) -> None:
        super().__init__()
        self.cfg = cfg
        self.window_size, self.shift = frame_sizes(cfg)
        self.n_fft = fft_size(cfg)
        window = torch.hann_window(self.window_size, periodic=True, dtype=torch.float64)
        left = (self.n_fft - self.window_size) // 2  # librosa centres the window in the FFT frame
        window = F.pad(window, (left, self.n_fft - self.window_size - left))
        self.register_buffer("window", window.float(), persistent=False)  # (n_fft,)
        high = cfg.high_hz
        banks = AF.melscale_fbanks(
            self.n_fft // 2 + 1, cfg.low_freq, high, cfg.n_mels, cfg.sample_rate, norm="slaney", mel_scale="slaney"
        )
        self.register_buffer("mel_banks", banks.float(), persistent=False)  # (K, M)

    @property
    def output_dim(self) -> int:
        """Feature dimension F of the output."""
        return self.cfg.n_mels * (3 if self.cfg.deltas else 1)

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N) waves, (B,) lengths in samples -> (B, T, F) log-mel, (B,) frame lengths."""
        waves, lengths = _check_batch(waves, lengths, self.window.dtype)
        B, N = waves.shape
        frame_lengths = torch.where(lengths > 0, lengths // self.shift + 1, 0)
        with torch.autocast(waves.device.type, enabled=False):
            # Zero beyond each length so that the centring pad sees what librosa sees.
            valid = torch.arange(N, device=waves.device) < lengths.unsqueeze(1)
            half = self.n_fft // 2
            x = F.pad(waves * valid, (half, half))  # (B, N + n_fft)
            frames = x.unfold(1, self.n_fft, self.shift) * self.window  # (B, T, n_fft)
            spectrum = torch.view_as_real(torch.fft.rfft(frames))
            power = spectrum.square_()
            power = power[..., 0] + power[..., 1]  # (B, T, K)
            feats = torch.log(power @ self.mel_banks + self.cfg.log_offset)  # (B, T, M)
        if self.cfg.deltas:
            feats = add_deltas(feats, frame_lengths)  # reads valid frames only
        return zero_padding_(feats, frame_lengths), frame_lengths


def build_features(cfg: FeatureConfig) -> Fbank | MFCC | LibrosaMel:
    """The feature module that `cfg.kind` names."""
    if cfg.kind == "fbank":
        return Fbank(cfg)
    if cfg.kind == "mfcc":
        return MFCC(cfg)
    if cfg.kind == "librosa_mel":
        return LibrosaMel(cfg)
    raise ValueError(f"unknown feature kind {cfg.kind!r}")


def _put(dst: Tensor, src: Tensor, offset: Tensor | None) -> None:
    """dst = src - offset[..., None] (or a plain copy), written in place."""
    if offset is None:
        dst.copy_(src)
    else:
        torch.sub(src, offset.unsqueeze(-1), out=dst)


def _pack(counts: list[int], size: int) -> Iterator[list[tuple[int, int, int]]]:
    """Chunks of about `size` frames: [(utterance, t0, t1)] pieces, utterance after utterance."""
    chunk: list[tuple[int, int, int]] = []
    room = size
    for b, n in enumerate(counts):
        t = 0
        while t < n:
            take = min(room, n - t)
            chunk.append((b, t, t + take))
            t, room = t + take, room - take
            if room == 0:
                yield chunk
                chunk, room = [], size
    if chunk:
        yield chunk


_SCRATCH = threading.local()  # per-thread CPU work buffers, shared by all modules (calls in a thread are sequential)


def _scratch(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A CPU work tensor of `shape` with undefined contents, reused from call to call in this thread."""
    numel = math.prod(shape)
    key = (name, dtype)
    buf = _SCRATCH.__dict__.get(key)
    if buf is None or buf.numel() < numel:
        buf = _SCRATCH.__dict__[key] = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(shape)


def _check_batch(waves: Tensor, lengths: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Shapes checked (values too on CPU, where it costs no device sync); waves in the module's dtype."""
    if waves.dim() != 2:
        raise ValueError(f"waves must be (B, N), got shape {tuple(waves.shape)}")
    if lengths.shape != waves.shape[:1]:
        raise ValueError(f"lengths must be (B,) = ({waves.shape[0]},), got {tuple(lengths.shape)}")
    lengths = lengths.to(device=waves.device, dtype=torch.long)
    if lengths.device.type == "cpu" and len(lengths) and not 0 <= int(lengths.min()) <= int(lengths.max()) <= waves.shape[1]:
        raise ValueError(f"lengths must be in [0, {waves.shape[1]}], got {lengths.tolist()}")
    return waves.to(dtype), lengths


# --------------------------------------------------------------------------------------------
# Cepstral mean and variance normalisation


class CMVNStats:
    """Streaming per-dimension feature statistics in float64: frame count, sum, sum of squares."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.count = 0  # valid frames seen
        self.sum = torch.zeros(dim, dtype=torch.float64)  # (F,)
        self.sum_sq = torch.zeros(dim, dtype=torch.float64)  # (F,)

    def update(self, feats: Tensor, frame_lengths: Tensor) -> CMVNStats:
        """Add the valid frames of a padded batch (B, T, F); padded frames are ignored."""
        if feats.shape[-1] != self.dim:
            raise ValueError(f"features have {feats.shape[-1]} dimensions, the statistics {self.dim}")
        valid = frame_mask(frame_lengths.to(feats.device), feats.shape[1])  # (B, T)
        x = feats[valid].double()  # (frames, F)
        self.count += x.shape[0]
        self.sum += x.sum(0).cpu()
        self.sum_sq += x.square().sum(0).cpu()
        return self

    def merge(self, other: CMVNStats) -> CMVNStats:
        """New statistics over both sets of frames (e.g. from several workers)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {self.dim} and {other.dim}")
        out = CMVNStats(self.dim)
        out.count = self.count + other.count
        out.sum = self.sum + other.sum
        out.sum_sq = self.sum_sq + other.sum_sq
        return out

    @property
    def mean(self) -> Tensor:
        """(F,) float64 mean of the frames."""
        if self.count == 0:
            raise ValueError("no frames in the CMVN statistics")
        return self.sum / self.count

    def std(self, floor: float = STD_FLOOR) -> Tensor:
        """(F,) float64 standard deviation (population), at least `floor`."""
        var = self.sum_sq / max(self.count, 1) - self.mean.square()
        return var.clamp_min(0.0).sqrt().clamp_min(floor)

    def to_dict(self) -> dict[str, Tensor | int]:
        """Plain values and tensors, for `torch.save(..., weights_only=True)` files."""
        return {"count": self.count, "sum": self.sum.clone(), "sum_sq": self.sum_sq.clone()}

    @classmethod
    def from_dict(cls, data: dict[str, Tensor | int]) -> CMVNStats:
        """Inverse of `to_dict`."""
        stats = cls(int(data["sum"].shape[0]))  # type: ignore[union-attr]
        stats.count = int(data["count"])
        stats.sum = data["sum"].double().clone()  # type: ignore[union-attr]
        stats.sum_sq = data["sum_sq"].double().clone()  # type: ignore[union-attr]
        return stats


class GlobalCMVN(nn.Module):
    """(x - mean) / std with corpus statistics held as buffers, so they travel in the state_dict.

    Before `set_stats` the buffers are mean 0 and inverse std 1 (identity) with their final
    shape, so a checkpoint loads into a freshly built model. Padded frames stay zero.
    """

    def __init__(self, dim: int, norm_vars: bool = True) -> None:
        super().__init__()
        self.norm_vars = norm_vars
        self.register_buffer("mean", torch.zeros(dim))  # (F,)
        self.register_buffer("istd", torch.ones(dim))  # (F,) 1 / std

    def set_stats(self, stats: CMVNStats, floor: float = STD_FLOOR) -> None:
        """Take mean and inverse standard deviation from `stats`."""
        if stats.dim != self.mean.shape[0]:
            raise ValueError(f"CMVN statistics have dimension {stats.dim}, the features {self.mean.shape[0]}")
        self.mean.copy_(stats.mean.float())
        self.istd.copy_((1.0 / stats.std(floor)).float() if self.norm_vars else torch.ones_like(self.istd))

    def forward(self, feats: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, F) -> (B, T, F) normalised on the valid frames."""
        out = (feats - self.mean) * self.istd
        valid = frame_mask(frame_lengths.to(feats.device), feats.shape[1]).unsqueeze(-1)
        return out.masked_fill_(~valid, 0.0), frame_lengths


class UtteranceMVN(nn.Module):
    """Per-utterance mean (and optionally variance) normalisation over each utterance's valid frames."""

    def __init__(self, norm_vars: bool = False, floor: float = STD_FLOOR) -> None:
        super().__init__()
        self.norm_vars = norm_vars
        self.floor = floor

    def forward(self, feats: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, F) -> (B, T, F) with each utterance's valid frames centred; padding stays zero."""
        valid = frame_mask(frame_lengths.to(feats.device), feats.shape[1]).unsqueeze(-1)  # (B, T, 1)
        n = frame_lengths.to(feats.device).clamp(min=1).view(-1, 1, 1).to(feats.dtype)
        x = feats.masked_fill(~valid, 0.0)
        mean = x.sum(1, keepdim=True) / n  # (B, 1, F)
        out = x - mean
        if self.norm_vars:
            var = out.masked_fill(~valid, 0.0).square().sum(1, keepdim=True) / n
            out = out / var.sqrt().clamp_min(self.floor)
        return out.masked_fill_(~valid, 0.0), frame_lengths


class _NoNorm(nn.Module):
    """Pass-through with the (feats, lengths) contract."""

    def forward(self, feats: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        return feats, frame_lengths


@torch.no_grad()
def compute_cmvn(features: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> CMVNStats:
    """CMVN statistics of `features` (a module with the (waves, lengths) contract) over padded batches.

    The module runs in eval mode (no dither, no augmentation) and gets its mode back afterwards.
    """
    was_training = features.training
    features.eval()
    stats: CMVNStats | None = None
    try:
        device = next((b.device for b in features.buffers()), torch.device("cpu"))
        for waves, lengths in batches:
            feats, frame_lengths = features(waves.to(device), lengths.to(device))
            stats = (stats or CMVNStats(feats.shape[-1])).update(feats, frame_lengths)
    finally:
        features.train(was_training)
    if stats is None or stats.count == 0:
        raise ValueError("no frames to compute CMVN statistics from")
    return stats


# --------------------------------------------------------------------------------------------
# SpecAugment


@dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment (Park et al. 2019), applied in training mode only."""

    freq_masks: int = 2  # frequency masks per utterance
    freq_width: int = 27  # largest frequency mask, in bins (width drawn uniformly from 0..freq_width)
    time_masks: int = 2  # time masks per utterance
    time_width: float = 0.05  # largest time mask: < 1 is a fraction of the utterance's frames, >= 1 a frame count
    time_width_max: int = 40  # cap on the time mask width, frames
    time_warp: int = 0  # largest warp distance W in frames; 0 turns time warping off
    mask_value: float = 0.0  # value written into the masks (0 = the mean after CMVN)

    def __post_init__(self) -> None:
        if min(self.freq_masks, self.freq_width, self.time_masks, self.time_width_max, self.time_warp) < 0:
            raise ValueError("SpecAugment counts and widths must be >= 0")
        if self.time_width < 0:
            raise ValueError(f"time_width must be >= 0, got {self.time_width}")


class SpecAugment(nn.Module):
    """Time warp, frequency masks and time masks inside each utterance's valid frames.

    Identity in eval mode. Masks never touch padded frames; random draws come from
    torch's default generator, so `torch.manual_seed` makes them repeatable.
    """

    def __init__(self, cfg: SpecAugmentConfig = SpecAugmentConfig()) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, feats: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, F) -> (B, T, F) augmented (training) or unchanged (eval)."""
        if not self.training:
            return feats, frame_lengths
        cfg = self.cfg
        B, T, Fdim = feats.shape
        lengths = frame_lengths.to(feats.device)
        if cfg.time_warp > 0:
            feats = self._time_warp(feats, lengths)
        mask = torch.zeros(B, T, Fdim, dtype=torch.bool, device=feats.device)
        if cfg.freq_masks and cfg.freq_width:
            width = min(cfg.freq_width, Fdim)
            full = torch.full((B,), Fdim, device=feats.device)
            mask |= _band_mask(full, width, cfg.freq_masks, Fdim).unsqueeze(1)  # (B, 1, F)
        if cfg.time_masks:
            if cfg.time_width < 1.0:
                widths = (lengths.double() * cfg.time_width).long().clamp(max=cfg.time_width_max)
            else:
                widths = torch.full_like(lengths, min(int(cfg.time_width), cfg.time_width_max))
            mask |= _band_mask(lengths, widths, cfg.time_masks, T).unsqueeze(2)  # (B, T, 1)
        mask &= frame_mask(lengths, T).unsqueeze(2)  # padded frames stay as they are
        return feats.masked_fill(mask, cfg.mask_value), frame_lengths

    def _time_warp(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """Stretch [0, c) onto [0, c + d) and squeeze [c, n) onto [c + d, n), per utterance (linear interpolation)."""
        W = self.cfg.time_warp
        out = feats.clone()
        centers = torch.rand(feats.shape[0]).tolist()
        shifts = torch.rand(feats.shape[0]).tolist()
        for b, n in enumerate(lengths.tolist()):
            if n <= 2 * W + 1:
                continue
            c = W + int(centers[b] * (n - 2 * W))  # in [W, n - W)
            w = c - W + int(shifts[b] * (2 * W + 1))  # in [c - W, c + W]
            if w <= 0 or w >= n or w == c:
                continue
            x = feats[b, :n].T.unsqueeze(0)  # (1, F, n)
            left = F.interpolate(x[..., :c], size=w, mode="linear", align_corners=False)
            right = F.interpolate(x[..., c:], size=n - w, mode="linear", align_corners=False)
            out[b, :n] = torch.cat([left, right], dim=-1)[0].T
        return out


def _band_mask(lengths: Tensor, max_width: Tensor | int, count: int, size: int) -> Tensor:
    """(B, size) bool: `count` bands of width uniform in [0, max_width], each inside [0, length)."""
    B = lengths.shape[0]
    device = lengths.device
    max_width = torch.as_tensor(max_width, device=device).expand(B).minimum(lengths)  # (B,)
    width = (torch.rand(B, count, device=device) * (max_width.unsqueeze(1) + 1)).long()  # (B, count)
    width = torch.minimum(width, max_width.unsqueeze(1))
    start = (torch.rand(B, count, device=device) * (lengths.unsqueeze(1) - width + 1)).long()  # (B, count)
    start = torch.minimum(start, (lengths.unsqueeze(1) - width).clamp(min=0))
    pos = torch.arange(size, device=device).view(1, 1, -1)
    inside = (pos >= start.unsqueeze(-1)) & (pos < (start + width).unsqueeze(-1))  # (B, count, size)
    return inside.any(1)


# --------------------------------------------------------------------------------------------
# The front-end the model owns


@dataclass(frozen=True)
class FrontendConfig:
    """Features -> normalisation -> augmentation, as the model runs them."""

    features: FeatureConfig = field(default_factory=FeatureConfig)  # which features
    cmvn: Literal["global", "utterance", "none"] = "global"  # corpus stats in the model, per utterance mean, or none
    specaug: SpecAugmentConfig | None = None  # SpecAugment in training mode; None = off
    silence_pad: SilencePadConfig | None = None  # quiet noise around each wave in training mode; None = off
    level_noise: LevelNoiseConfig | None = None  # random level and noise floor in training mode; None = off
    vtlp: VTLPConfig | None = None  # vocal tract length perturbation of the log-mel bands in training mode; None = off

    def __post_init__(self) -> None:
        if self.vtlp is not None and self.features.kind != "fbank":
            raise ValueError(f"frontend.vtlp warps Kaldi fbank bands; features.kind is {self.features.kind!r}")


class Frontend(nn.Module):
    """Padded waves (B, N) -> normalised, augmented features (B, T, output_dim) and frame lengths.

    Lives inside the model, so features are computed on the model's device and the
    checkpoint carries the CMVN statistics (buffers `cmvn.mean`, `cmvn.istd`). Those
    buffers exist, as an identity, from construction; `set_cmvn` fills them.
    """

    def __init__(self, cfg: FrontendConfig = FrontendConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.features = build_features(cfg.features)
        dim = self.features.output_dim
        if cfg.cmvn == "global":
            self.cmvn: nn.Module = GlobalCMVN(dim)
        elif cfg.cmvn == "utterance":
            self.cmvn = UtteranceMVN()
        else:
            self.cmvn = _NoNorm()
        self.specaug = SpecAugment(cfg.specaug) if cfg.specaug is not None else None
        self.silence_pad = (SilencePad(cfg.silence_pad, cfg.features.sample_rate)
                            if cfg.silence_pad is not None else None)
        self.level_noise = LevelNoise(cfg.level_noise) if cfg.level_noise is not None else None
        f = cfg.features
        self.vtlp = VTLP(cfg.vtlp, f.n_mels, f.low_freq, f.high_hz, f.sample_rate) if cfg.vtlp is not None else None

    @property
    def output_dim(self) -> int:
        """Feature dimension of the output."""
        return self.features.output_dim

    def set_cmvn(self, stats: CMVNStats) -> None:
        """Store corpus CMVN statistics (needs cmvn == "global")."""
        if not isinstance(self.cmvn, GlobalCMVN):
            raise ValueError(f"this front-end uses cmvn={self.cfg.cmvn!r}; only 'global' takes statistics")
        self.cmvn.set_stats(stats)

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N) waves, (B,) lengths in samples -> (B, T, F) features, (B,) frame lengths."""
        if self.level_noise is not None:
            waves, lengths = self.level_noise(waves, lengths)
        if self.silence_pad is not None:
            waves, lengths = self.silence_pad(waves, lengths)
        feats, frame_lengths = self.features(waves, lengths)
        if self.vtlp is not None:
            feats, frame_lengths = self.vtlp(feats, frame_lengths)
        feats, frame_lengths = self.cmvn(feats, frame_lengths)
        if self.specaug is not None:
            feats, frame_lengths = self.specaug(feats, frame_lengths)
        return feats, frame_lengths
