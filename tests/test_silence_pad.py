"""Silence padding: the speech is kept sample for sample, the edges are quiet noise of the configured size."""

from __future__ import annotations

import pytest
import torch

from asr.config import from_dict
from asr.features import Frontend, FrontendConfig
from asr.silence_pad import SilencePad, SilencePadConfig

RATE = 1000  # samples per second: small tensors, pads in whole samples


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([700, 250, 1])
    waves = torch.zeros(3, 700)
    for i, n in enumerate(lengths.tolist()):
        waves[i, :n] = torch.rand(n) * 0.5 + 0.25  # far above any noise level below
    return waves, lengths


def test_eval_mode_and_prob_zero_leave_the_waves_as_they_are() -> None:
    waves, lengths = batch()
    pad = SilencePad(SilencePadConfig(max_s=0.3), RATE).eval()
    out, out_lengths = pad(waves, lengths)
    assert out is waves and out_lengths is lengths
    never = SilencePad(SilencePadConfig(max_s=0.3, prob=0.0), RATE).train()
    out, out_lengths = never(waves, lengths)
    assert torch.equal(out, waves) and torch.equal(out_lengths, lengths)


def test_each_wave_sits_whole_between_two_quiet_pads_of_at_most_max_s() -> None:
    torch.manual_seed(0)
    waves, lengths = batch()
    cfg = SilencePadConfig(max_s=0.3, noise_db=(-60.0, -40.0), prob=1.0)
    pad = SilencePad(cfg, RATE).train()
    leads, trails = [], []
    for _ in range(20):
        out, out_lengths = pad(waves, lengths)
        assert out.shape[1] == int(out_lengths.max())
        for i, n in enumerate(lengths.tolist()):
            row, total = out[i], int(out_lengths[i])
            loud = torch.nonzero(row.abs() >= 0.25).flatten()
            lead = int(loud[0])
            assert torch.equal(row[lead:lead + n], waves[i, :n])  # the speech, untouched and in one piece
            trail = total - lead - n
            assert 0 <= lead <= 300 and 0 <= trail <= 300
            assert torch.all(row[total:] == 0)  # past the new length: padding of the batch
            edges = torch.cat([row[:lead], row[lead + n:total]])
            if edges.numel() > 50:  # RMS of the noise inside the configured level range
                rms_db = 20 * torch.log10(edges.pow(2).mean().sqrt())
                assert -63.0 < float(rms_db) < -37.0
            leads.append(lead)
            trails.append(trail)
    assert len(set(leads)) > 10 and len(set(trails)) > 10  # drawn, not fixed
    assert max(leads) > 200 and max(trails) > 200


def test_the_same_seed_gives_the_same_padding() -> None:
    waves, lengths = batch()
    pad = SilencePad(SilencePadConfig(), RATE).train()
    torch.manual_seed(3)
    a = pad(waves, lengths)
    torch.manual_seed(3)
    b = pad(waves, lengths)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_the_front_end_pads_in_training_only_and_reads_it_from_a_config() -> None:
    cfg = from_dict(FrontendConfig, {"cmvn": "none", "silence_pad": {"max_s": 0.2, "prob": 1.0}})
    assert cfg.silence_pad == SilencePadConfig(max_s=0.2, prob=1.0)
    frontend = Frontend(cfg)
    waves, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000])
    frontend.eval()
    _, eval_frames = frontend(waves, lengths)
    torch.manual_seed(1)
    frontend.train()
    _, train_frames = frontend(waves, lengths)
    assert torch.all(train_frames >= eval_frames) and torch.any(train_frames > eval_frames)
    assert torch.all(train_frames <= eval_frames + 41)  # 2 x 0.2 s at 10 ms frames


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="silence_pad"):
        SilencePadConfig(max_s=-1.0)
    with pytest.raises(ValueError, match="silence_pad"):
        SilencePadConfig(noise_db=(-40.0, -60.0))
    with pytest.raises(ValueError, match="silence_pad"):
        SilencePadConfig(prob=1.5)
