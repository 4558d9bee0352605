"""Training-time padding of waveforms with quiet noise before and after the speech.

Corpora of tightly trimmed recordings (isolated words, as in fsdd) teach a model
that speech starts at the first frame. At transcription time the segmenter keeps
some context around each stretch of speech (asr.segment's pad_s), and recordings
people bring start and end with room noise, so such a model then misreads nearly
every word. Padding each training utterance with a random amount of noise at a
random low level on each side shows it what those edges sound like.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class SilencePadConfig:
    """How much quiet noise is put around each training utterance."""

    max_s: float = 0.3  # each side gets uniform [0, max_s] seconds
    noise_db: tuple[float, float] = (-80.0, -50.0)  # noise level, dBFS (RMS), uniform per utterance in this range
    prob: float = 0.8  # share of utterances padded (the others stay as recorded)

    def __post_init__(self) -> None:
        low, high = self.noise_db
        if self.max_s < 0 or low > high or not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"silence_pad: need max_s >= 0, noise_db low <= high, 0 <= prob <= 1; got {self}")


class SilencePad(nn.Module):
    """Padded waves (B, N) -> the same waves with noise before and after each one (training mode only).

    Identity in eval mode. Random draws come from torch's default generator, so
    `torch.manual_seed` makes them repeatable.
    """

    def __init__(self, cfg: SilencePadConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_samples = int(round(cfg.max_s * sample_rate))

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N) waves, (B,) lengths in samples -> (B, N') waves, (B,) lengths; samples past a length are 0."""
        if not self.training or self.max_samples == 0 or self.cfg.prob == 0.0:
            return waves, lengths
        b, n = waves.shape
        dev = waves.device
        lengths = lengths.to(dev)
        padded = torch.rand(b, device=dev) < self.cfg.prob
        lead, trail = (torch.randint(0, self.max_samples + 1, (2, b), device=dev) * padded).unbind(0)
        new_lengths = lengths + lead + trail
        t = torch.arange(int(new_lengths.max()), device=dev).unsqueeze(0)  # (1, N') output sample
        pos = t - lead.unsqueeze(1)  # (B, N') input sample it holds, where it holds one
        inside = (pos >= 0) & (pos < lengths.unsqueeze(1))
        speech = waves.gather(1, pos.clamp(0, n - 1))
        low, high = self.cfg.noise_db
        level = 10.0 ** ((low + (high - low) * torch.rand(b, 1, device=dev)) / 20.0)
        noise = torch.randn_like(speech) * level.to(waves.dtype)
        out = torch.where(inside, speech, noise)
        out = out.masked_fill(t >= new_lengths.unsqueeze(1), 0.0)
        return out, new_lengths
