"""Small-data augmentation on real speech: speed perturbation, the shortest-first curriculum, VTLP."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from asr.data.loader import make_loader
from asr.data.manifest import read_manifest, write_manifest
from asr.data.samples import assign_speeds, change_speed, decode_sample, sample_from_utterance
from asr.errors import AsrError
from asr.features import Fbank, FeatureConfig, Frontend, FrontendConfig
from asr.text import CharTokenizer
from asr.vtlp import VTLP, VTLPConfig, source_frequencies


@pytest.fixture(scope="module")
def twelve(tmp_path_factory, so762_dir: Path) -> Path:
    """Twelve speechocean762 training utterances of varied lengths, as a manifest with absolute paths."""
    utts = read_manifest(so762_dir / "train.jsonl")[:12]
    path = tmp_path_factory.mktemp("twelve") / "train.jsonl"
    write_manifest(utts, path)
    return path


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_changes_the_duration_by_its_factor_and_keeps_the_text(twelve, factor):
    utt = read_manifest(twelve)[0]
    tokenizer = CharTokenizer.from_texts([utt.text])
    plain = decode_sample(sample_from_utterance(utt, "m"), 16000, tokenizer, 0.1)
    sample = next(assign_speeds([sample_from_utterance(utt, "m")], (factor,), random.Random(0)))
    fast = decode_sample(sample, 16000, tokenizer, 0.1)
    assert fast.target == plain.target and fast.sample.text == utt.text
    assert abs(fast.wave.numel() - plain.wave.numel() / factor) <= 1
    assert sample.seconds == pytest.approx(utt.duration / factor)
    # Played faster, every frequency rises by the factor: the fast mean spectrum at f matches the
    # plain one at f / s best for s = factor.
    def spectrum(wave: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wave, 512, window=torch.hann_window(512), return_complex=True)
        return spec.abs().pow(2).mean(1).add(1e-6).log()  # (257,)
    plain_spec, fast_spec = spectrum(plain.wave), spectrum(fast.wave)
    bins = torch.arange(10, 200, dtype=torch.float32)

    def mismatch(s: float) -> float:
        pos = bins / s
        lo = pos.floor().long()
        shifted = plain_spec[lo] + (pos - lo) * (plain_spec[lo + 1] - plain_spec[lo])
        return float((fast_spec[10:200] - shifted).pow(2).mean())
    grid = [0.8 + 0.01 * i for i in range(41)]
    assert min(grid, key=mismatch) == pytest.approx(factor, abs=0.015)


def test_change_speed_matches_torchaudio_speed():
    """Our resampling is torchaudio's own speed change (an independent implementation of the same thing)."""
    import torchaudio.functional as AF

    wave = torch.randn(16000)
    for factor in (0.9, 1.1):
        ref, _ = AF.speed(wave.unsqueeze(0), 16000, factor)
        assert torch.allclose(change_speed(wave, 16000, factor), ref[0], atol=1e-5)


def test_the_loader_draws_every_speed_and_batches_by_perturbed_seconds(twelve):
    tokenizer = CharTokenizer.from_texts(u.text for u in read_manifest(twelve))
    loader = make_loader(str(twelve), tokenizer=tokenizer, batch_seconds=20.0, speed_perturb=(0.9, 1.0, 1.1),
                         num_workers=0)
    ratios = set()
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:
            assert len(batch) * max(batch.durations) <= 20.0 + 1e-6
            for seconds, n in zip(batch.durations, batch.wave_lengths.tolist()):
                assert n / 16000 == pytest.approx(seconds, abs=0.11)
            ratios.update(round(d / u, 2) for d, u in zip(batch.durations, _declared(twelve, batch.ids)))
    assert ratios == {round(1 / 0.9, 2), 1.0, round(1 / 1.1, 2)}
    with pytest.raises(AsrError, match="speed_perturb"):
        make_loader(str(twelve), speed_perturb=(3.0,))


def _declared(manifest: Path, ids: list[str]) -> list[float]:
    seconds = {u.id: u.duration for u in read_manifest(manifest)}
    return [seconds[i] for i in ids]


def test_the_curriculum_goes_shortest_first_then_shuffles(twelve):
    loader = make_loader(str(twelve), batch_seconds=12.0, sorted_epochs=1, num_workers=0)
    first = [d for b in loader for d in b.durations]
    assert first == sorted(first)
    loader.set_epoch(1)
    later = [d for b in loader for d in b.durations]
    assert sorted(later) == sorted(first) and later != first


def test_vtlp_inverse_warp_is_kaldis_piecewise_line():
    centres = torch.tensor([1000.0, 4000.0, 7000.0], dtype=torch.float64)
    src = source_frequencies(centres, torch.tensor([1.1, 1.0], dtype=torch.float64), 4800.0, 8000.0)
    assert torch.allclose(src[1], centres)  # alpha 1: identity
    assert src[0, 0] == pytest.approx(1000 / 1.1)  # below the bend: f / alpha
    f_hi = 4800 / 1.1  # the bend for alpha > 1; above it the line reaches the Nyquist frequency
    forward = 8000 - (8000 - f_hi * 1.1) / (8000 - f_hi) * (8000 - src[0, 2])
    assert float(forward) == pytest.approx(7000.0)


def test_vtlp_moves_the_mel_axis_of_real_speech(twelve):
    utt = read_manifest(twelve)[0]
    wave = decode_sample(sample_from_utterance(utt, "m"), 16000, None, 0.1).wave
    cfg = FeatureConfig(n_mels=80)
    feats, lengths = Fbank(cfg)(wave.unsqueeze(0), torch.tensor([wave.numel()]))
    vtlp = VTLP(VTLPConfig(max_warp=0.1), 80, cfg.low_freq, 8000.0, 16000)
    padded = torch.cat([feats, torch.zeros(1, 7, 80)], dim=1)
    assert torch.allclose(vtlp.warp(padded, torch.tensor([1.0])), padded, atol=1e-5)

    # Kaldi's VTLN (warped mel filters, computed from the wave) is the independent reference: in
    # the bands between 400 Hz and 4 kHz the warped features are far closer to it than unwarped ones.
    import torchaudio.compliance.kaldi as kaldi

    band = (vtlp.centres > 400) & (vtlp.centres < 4000)
    for alpha in (0.9, 1.1):
        ref = kaldi.fbank(wave.unsqueeze(0) * 32768, num_mel_bins=80, dither=0.0, energy_floor=0.0,
                          vtln_warp=alpha)
        warped = vtlp.warp(padded, torch.tensor([alpha]))
        near = (warped[0, : ref.shape[0]] - ref)[:, band].abs().mean()
        assert near < 0.25 * (feats[0] - ref)[:, band].abs().mean()
        assert (warped[0, -7:] == 0).all()  # padded frames stay zero

    frontend = Frontend(FrontendConfig(features=cfg, cmvn="none", vtlp=VTLPConfig(max_warp=0.1))).train()
    torch.manual_seed(0)
    warped, _ = frontend(wave.unsqueeze(0), torch.tensor([wave.numel()]))
    assert not torch.allclose(warped, feats)
    assert torch.equal(frontend.eval()(wave.unsqueeze(0), torch.tensor([wave.numel()]))[0], feats)
    with pytest.raises(ValueError, match="vtlp"):
        FrontendConfig(features=FeatureConfig(kind="mfcc", n_mels=23), vtlp=VTLPConfig())
