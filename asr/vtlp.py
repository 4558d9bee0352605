"""Vocal tract length perturbation (VTLP, Jaitly & Hinton 2013) on log-mel features, training only.

Each utterance gets a warp factor alpha drawn uniformly from [1 - max_warp, 1 + max_warp];
its spectrum is stretched along the frequency axis by Kaldi's piecewise linear VTLN warp
(f -> alpha * f below a boundary, then a straight line to the Nyquist frequency), as a
shorter or longer vocal tract would. The warp is applied to the log-mel bands: the band
centred at c reads the (linearly interpolated) band at the source frequency warp^-1(c), so
alpha > 1 moves formants up the mel axis. Speech of children and adults differs mostly in
this way, which is why it suits corpora that mix them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class VTLPConfig:
    """How far spectra are warped."""

    max_warp: float = 0.1  # alpha is drawn uniformly from [1 - max_warp, 1 + max_warp]
    boundary_hz: float = 4800.0  # upper edge of the linear part (Jaitly & Hinton's 4.8 kHz at 16 kHz)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_warp < 0.5:
            raise ValueError(f"vtlp.max_warp must be in [0, 0.5), got {self.max_warp}")
        if self.boundary_hz <= 0:
            raise ValueError(f"vtlp.boundary_hz must be positive, got {self.boundary_hz}")


def _mel(hz: Tensor) -> Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def _hz(mel: Tensor) -> Tensor:
    return 700.0 * torch.expm1(mel / 1127.0)


def source_frequencies(centres_hz: Tensor, alpha: Tensor, boundary_hz: float, nyquist: float) -> Tensor:
    """warp^-1 of each centre for each alpha: (M,), (B,) -> (B, M) Hz the warped bands read from."""
    a = alpha.unsqueeze(1)  # (B, 1)
    f_hi = boundary_hz * torch.clamp(a, max=1.0) / a  # (B, 1) input frequency where the line bends
    c = centres_hz.unsqueeze(0)  # (1, M)
    below = c / a
    above = nyquist - (nyquist - c) * (nyquist - f_hi) / (nyquist - f_hi * a)
    return torch.where(c <= f_hi * a, below, above)


class VTLP(nn.Module):
    """(B, T, M) log-mel features -> the same, each utterance warped by its own alpha; identity in eval mode.

    `low_hz`, `high_hz` and M give the mel bands' layout (Kaldi's: centres evenly spaced on the mel
    scale between them). Padded frames stay zero: interpolating zeros gives zeros.
    """

    def __init__(self, cfg: VTLPConfig, n_mels: int, low_hz: float, high_hz: float, sample_rate: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.nyquist = sample_rate / 2
        lo, hi = _mel(torch.tensor(float(low_hz), dtype=torch.float64)), _mel(torch.tensor(float(high_hz),
                                                                                          dtype=torch.float64))
        self.lo_mel, self.delta = float(lo), float((hi - lo) / (n_mels + 1))
        centres = _hz(lo + self.delta * torch.arange(1, n_mels + 1, dtype=torch.float64))  # (M,)
        self.register_buffer("centres", centres, persistent=False)

    def warp(self, feats: Tensor, alpha: Tensor) -> Tensor:
        """Warp each utterance of `feats` (B, T, M) by its `alpha` (B,)."""
        M = feats.shape[-1]
        src = source_frequencies(self.centres, alpha.to(torch.float64).cpu(), self.cfg.boundary_hz, self.nyquist)
        pos = ((_mel(src) - self.lo_mel) / self.delta - 1.0).clamp(0, M - 1)  # (B, M) fractional band index
        left = pos.floor().long().clamp(max=M - 2)
        frac = (pos - left).to(feats.dtype).to(feats.device).unsqueeze(1)  # (B, 1, M)
        left = left.to(feats.device).unsqueeze(1).expand(-1, feats.shape[1], -1)  # (B, T, M)
        lo = feats.gather(2, left)
        hi = feats.gather(2, left + 1)
        return lo + frac * (hi - lo)

    def forward(self, feats: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Random warps in training mode; unchanged features otherwise."""
        if not self.training or self.cfg.max_warp == 0:
            return feats, frame_lengths
        alpha = 1.0 + (2 * torch.rand(feats.shape[0], dtype=torch.float64) - 1) * self.cfg.max_warp
        return self.warp(feats, alpha), frame_lengths
