"""Level and noise-floor augmentation: each wave is scaled within the gain range and sits over white
noise of the configured level; eval mode and padding are untouched."""

from __future__ import annotations

import math

import pytest
import torch

from asr.config import from_dict
from asr.features import Frontend, FrontendConfig
from asr.level_noise import LevelNoise, LevelNoiseConfig


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    lengths = torch.tensor([8000, 3000])
    waves = torch.zeros(2, 8000)
    for i, n in enumerate(lengths.tolist()):
        waves[i, :n] = 0.1 * torch.randn(n)
    return waves, lengths


def test_eval_mode_leaves_the_waves_as_they_are() -> None:
    waves, lengths = batch()
    out, out_lengths = LevelNoise(LevelNoiseConfig(prob=1.0)).eval()(waves, lengths)
    assert out is waves and out_lengths is lengths


def test_gain_and_noise_stay_in_their_ranges_and_padding_stays_zero() -> None:
    waves, lengths = batch()
    cfg = LevelNoiseConfig(gain_db=(-30.0, -10.0), noise_db=(-60.0, -50.0), clip=False, prob=1.0)
    module = LevelNoise(cfg).train()
    for _ in range(10):
        out, out_lengths = module(waves, lengths)
        assert torch.equal(out_lengths, lengths)
        assert torch.all(out[1, 3000:] == 0)  # past its length: still padding
        for i, n in enumerate(lengths.tolist()):
            x, y = waves[i, :n], out[i, :n]
            gain = float((x @ y) / (x @ x))  # least-squares gain; the noise is independent of x
            assert -30.5 <= 20 * math.log10(gain) <= -9.5
            noise_db = 20 * math.log10(float((y - gain * x).square().mean().sqrt()))
            assert -61.0 <= noise_db <= -49.0


def test_prob_picks_utterances_and_clipping_bounds_the_samples() -> None:
    waves, lengths = batch()
    loud = LevelNoise(LevelNoiseConfig(gain_db=(30.0, 30.0), noise_db=(-90.0, -90.0), clip=True, prob=1.0)).train()
    out, _ = loud(waves, lengths)
    assert out.abs().max() <= 1.0 and (out.abs() == 1.0).any()
    never = LevelNoise(LevelNoiseConfig(prob=0.0)).train()
    assert torch.equal(never(waves, lengths)[0], waves)
    torch.manual_seed(0)
    half = LevelNoise(LevelNoiseConfig(prob=0.5)).train()
    out, _ = half(waves[:1].repeat(200, 1), lengths[:1].repeat(200))
    share = sum(not torch.equal(row, waves[0]) for row in out) / 200
    assert 0.35 < share < 0.65


def test_the_front_end_applies_it_in_training_only() -> None:
    cfg = from_dict(FrontendConfig, {"cmvn": "none", "level_noise": {"gain_db": [-20, -20], "noise_db": [-90, -90],
                                                                       "prob": 1.0}})
    assert cfg.level_noise == LevelNoiseConfig(gain_db=(-20.0, -20.0), noise_db=(-90.0, -90.0), prob=1.0)
    frontend = Frontend(cfg)
    waves, lengths = batch()
    train_feats, _ = frontend.train()(waves, lengths)
    eval_feats, _ = frontend.eval()(waves, lengths)
    # -20 dB is a factor 0.01 in power: every log-mel band drops by log(100) in training mode
    drop = (eval_feats[0, 2:-2] - train_feats[0, 2:-2]).median()
    assert float(drop) == pytest.approx(math.log(100.0), abs=0.05)


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="level_noise"):
        LevelNoiseConfig(gain_db=(10.0, -10.0))
    with pytest.raises(ValueError, match="level_noise"):
        LevelNoiseConfig(prob=1.5)
