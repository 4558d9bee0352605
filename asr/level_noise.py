"""Training-time level and noise-floor changes, so the words do not depend on the recording chain.

A model trained on one clean, level-normalised corpus reads its features' absolute level and its
near-empty bands too: the same digits come out differently from an MP3, an 8-bit WAV or a file
recorded 40 dB quieter, because codecs and coarse quantisation put a noise floor where the
training audio had none. Changing each training utterance's level at random and adding white
noise at a random low level shows the model those variations (as Kaldi's and ESPnet's noise and
volume perturbation do), in the model's front end and only in training mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LevelNoiseConfig:
    """How much each training utterance's level and noise floor vary."""

    gain_db: tuple[float, float] = (-40.0, 10.0)  # level change, dB, uniform per utterance
    noise_db: tuple[float, float] = (-90.0, -45.0)  # white noise RMS, dBFS, uniform per utterance (after the gain)
    clip: bool = True  # clip to [-1, 1] after the gain, as a recorder or a converter would
    prob: float = 0.5  # share of utterances changed (the others stay as recorded)

    def __post_init__(self) -> None:
        (g0, g1), (n0, n1) = self.gain_db, self.noise_db
        if g0 > g1 or n0 > n1 or not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"level_noise: need gain_db and noise_db as (low, high) and 0 <= prob <= 1; got {self}")


def _uniform(low: float, high: float, count: int, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(count, 1, device=device)


class LevelNoise(nn.Module):
    """Padded waves (B, N) -> each wave at a random level over random white noise (training mode only).

    Identity in eval mode; samples past a wave's length stay 0. Random draws come from torch's
    default generator, so `torch.manual_seed` makes them repeatable.
    """

    def __init__(self, cfg: LevelNoiseConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N) waves, (B,) lengths in samples -> the changed waves, the same lengths."""
        if not self.training or self.cfg.prob == 0.0:
            return waves, lengths
        b, n = waves.shape
        dev = waves.device
        chosen = (torch.rand(b, 1, device=dev) < self.cfg.prob).to(waves.dtype)
        gain = 10.0 ** (_uniform(*self.cfg.gain_db, b, dev) / 20.0)
        level = 10.0 ** (_uniform(*self.cfg.noise_db, b, dev) / 20.0)
        changed = waves * gain.to(waves.dtype) + torch.randn_like(waves) * level.to(waves.dtype)
        if self.cfg.clip:
            changed = changed.clamp(-1.0, 1.0)
        inside = torch.arange(n, device=dev).unsqueeze(0) < lengths.to(dev).unsqueeze(1)
        out = torch.where(inside, changed, torch.zeros_like(waves))
        return chosen * out + (1.0 - chosen) * waves, lengths
