"""Feature front-end against independent references: torchaudio's Kaldi compliance
functions, librosa, numpy statistics; padded batches against single utterances."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as K
import torchaudio.functional as AF

from asr import features
from asr.audio import load_audio
from asr.config import from_dict, to_dict
from asr.features import (
    MFCC,
    CMVNStats,
    Fbank,
    FeatureConfig,
    Frontend,
    FrontendConfig,
    GlobalCMVN,
    LibrosaMel,
    SpecAugment,
    SpecAugmentConfig,
    UtteranceMVN,
    add_deltas,
    build_features,
    compute_cmvn,
    kaldi_mel_banks,
    num_frames,
)

TOL = 1e-3  # max abs difference on log features
FLOAT32_RANGE = 16.0  # nats below a frame's strongest band where float32 spectra are still exact to TOL


def pad_batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (B, N) batch and (B,) lengths."""
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), max(1, int(lengths.max())))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return batch, lengths


def noise(n: int, seed: int, dc: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * 0.1 + dc


@pytest.fixture(scope="module")
def real_waves(so762_dir) -> list[torch.Tensor]:
    """A few speechocean762 utterances of different lengths (16 kHz)."""
    lines = [json.loads(line) for line in (so762_dir / "dev.jsonl").read_text().splitlines()[:40]]
    lines = sorted(lines, key=lambda r: r["duration"])[::8][:5]
    return [load_audio(so762_dir / r["audio"]) for r in lines]


@pytest.fixture(scope="module")
def some_speech(request) -> list[torch.Tensor]:
    """Two real utterances when the data is there, else none: these tests also run without it."""
    try:
        return request.getfixturevalue("real_waves")[:2]
    except pytest.skip.Exception:
        return []


def ta_fbank(wave: torch.Tensor, **kw) -> torch.Tensor:
    return K.fbank(wave[None] * 32768, num_mel_bins=80, dither=0.0, **kw)


# --------------------------------------------------------------------------- fbank


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 23457])
def test_fbank_matches_torchaudio_on_noise(n):
    wave = noise(n, n, dc=0.01)
    feats, frame_lengths = Fbank()(wave[None], torch.tensor([n]))
    ref = ta_fbank(wave)
    assert feats.shape == (1, ref.shape[0], 80) and int(frame_lengths) == ref.shape[0]
    assert (feats[0] - ref).abs().max() < TOL


def test_fbank_options_match_torchaudio():
    wave = noise(8000, 1)
    for kw, ours in [
        ({"window_type": "hamming"}, {"window": "hamming"}),
        ({"window_type": "rectangular", "preemphasis_coefficient": 0.5}, {"window": "rectangular", "preemphasis": 0.5}),
        ({"window_type": "blackman", "preemphasis_coefficient": 0.0}, {"window": "blackman", "preemphasis": 0.0}),
        ({"window_type": "hanning", "remove_dc_offset": False, "num_mel_bins": 40}, {"window": "hanning", "remove_dc_offset": False, "n_mels": 40}),
        ({"low_freq": 64.0, "high_freq": -400.0, "frame_length": 20.0, "frame_shift": 12.5}, {"low_freq": 64.0, "high_freq": -400.0, "frame_length_ms": 20.0, "frame_shift_ms": 12.5}),
    ]:
        kw = {"num_mel_bins": 80, **kw}
        ref = K.fbank(wave[None] * 32768, dither=0.0, **kw)
        feats, _ = Fbank(FeatureConfig(**ours))(wave[None], torch.tensor([len(wave)]))
        assert feats.shape[1:] == ref.shape and (feats[0] - ref).abs().max() < TOL, kw


def test_fbank_matches_torchaudio_on_real_speech(real_waves):
    fb32, fb64 = Fbank(), Fbank(dtype=torch.float64)
    for wave in real_waves:
        exact = K.fbank(wave[None].double() * 32768, num_mel_bins=80)
        # Double precision: the same algorithm, everywhere.
        assert (fb64(wave[None], torch.tensor([len(wave)]))[0][0] - exact).abs().max() < TOL
        # Single precision against torchaudio's single precision: equal wherever float32
        # can resolve the band; far below the frame's strongest band both are rounding
        # noise (torchaudio's own float32 output is off by up to ~0.03 there).
        ours = fb32(wave[None], torch.tensor([len(wave)]))[0][0]
        ref = ta_fbank(wave)
        resolvable = exact.max(1, keepdim=True).values - exact <= FLOAT32_RANGE
        assert resolvable.float().mean() > 0.98
        assert (ours - ref)[resolvable].abs().max() < TOL


def test_mel_banks_match_torchaudio():
    for n_mels, n_fft, rate, low, high in [(80, 512, 16000, 20.0, 0.0), (23, 512, 16000, 20.0, -400.0), (40, 256, 8000, 64.0, 3800.0)]:
        ref, _ = K.get_mel_banks(n_mels, n_fft, float(rate), low, high, 100.0, -500.0, 1.0)
        ours = kaldi_mel_banks(n_mels, n_fft, rate, low, high)
        assert ours.shape == (n_fft // 2 + 1, n_mels)
        assert torch.allclose(ours[:-1].T.float(), ref, atol=1e-4) and ours[-1].abs().max() == 0


def test_frame_counts_follow_kaldi():
    lengths = torch.tensor([0, 1, 399, 400, 401, 559, 560, 16000, 16001])
    expected = [0 if n < 400 else 1 + (n - 400) // 160 for n in lengths.tolist()]
    assert num_frames(lengths, 400, 160).tolist() == expected
    assert [K.fbank(torch.ones(1, n)).shape[0] for n in (400, 559, 560, 16001)] == [1, 1, 2, 98]


@pytest.mark.parametrize("chunk", [features.CPU_CHUNK_FRAMES, 37])
def test_padded_batch_equals_single_utterances(some_speech, monkeypatch, chunk):
    waves = [noise(16000, 1), noise(9000, 2, dc=0.3), noise(401, 3), noise(300, 4), torch.zeros(0), noise(2345, 5)]
    waves += some_speech
    for module in (Fbank(), MFCC(FeatureConfig(kind="mfcc", n_mels=23, deltas=True)), LibrosaMel()):
        singles = [module(w[None], torch.tensor([len(w)])) for w in waves]
        batch, lengths = pad_batch(waves)
        batch = torch.cat([batch, torch.zeros(len(waves), 777)], dim=1)  # extra padding changes nothing
        monkeypatch.setattr(features, "CPU_CHUNK_FRAMES", chunk)  # small chunks split utterances across chunks
        feats, frame_lengths = module(batch, lengths)
        monkeypatch.undo()
        for i, (single, single_len) in enumerate(singles):
            n = int(frame_lengths[i])
            assert torch.all(feats[i, n:] == 0), "frames past the end must be zero"
            assert int(single_len) == n
            assert n == 0 or (single.shape[1] == n and (feats[i, :n] - single[0, :n]).abs().max() < 1e-4)


def test_one_pass_device_path_equals_cpu_chunks(some_speech):
    """The path GPUs take (whole padded batch, dense mel matmul), run on CPU."""
    waves, lengths = pad_batch([noise(16000, 1), noise(401, 2), noise(100, 3)] + some_speech)
    for cfg in (FeatureConfig(), FeatureConfig(kind="mfcc", n_mels=23, deltas=True), FeatureConfig(window="hamming")):
        chunked = build_features(cfg)
        one_pass = build_features(cfg)
        one_pass.cpu_chunks = False
        a, la = chunked(waves, lengths)
        b, lb = one_pass(waves, lengths)
        assert torch.equal(la, lb) and (a - b).abs().max() < 1e-3


def test_bad_batches_are_rejected():
    with pytest.raises(ValueError, match="lengths must be in"):
        Fbank()(torch.zeros(2, 1000), torch.tensor([1000, 1001]))
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        Fbank()(torch.zeros(1000), torch.tensor([1000]))


def test_dither_applies_only_in_training():
    wave = noise(16000, 7)
    fb = Fbank(FeatureConfig(dither=1.0))
    clean, _ = Fbank()(wave[None], torch.tensor([16000]))
    fb.eval()
    assert torch.equal(fb(wave[None], torch.tensor([16000]))[0], clean)
    fb.train()
    torch.manual_seed(0)
    a, _ = fb(wave[None], torch.tensor([16000]))
    torch.manual_seed(0)
    b, _ = fb(wave[None], torch.tensor([16000]))
    assert torch.equal(a, b) and not torch.equal(a, clean)
    assert (a - clean).abs().mean() < 0.05  # int16-unit noise on a loud signal barely moves the log-mel
    mfcc = MFCC(FeatureConfig(kind="mfcc", n_mels=23, dither=1.0)).train()
    dithered, _ = mfcc(wave[None], torch.tensor([16000]))
    plain, _ = MFCC()(wave[None], torch.tensor([16000]))
    assert 0 < (dithered[..., 0] - plain[..., 0]).abs().max() < 0.05  # the energy sees the dither too


# --------------------------------------------------------------------------- mfcc


@pytest.mark.parametrize("n", [400, 16000, 23457])
def test_mfcc_matches_torchaudio_on_noise(n):
    wave = noise(n, n, dc=0.02)
    feats, _ = MFCC()(wave[None], torch.tensor([n]))
    ref = K.mfcc(wave[None] * 32768, use_energy=True, energy_floor=1.0)  # Kaldi's use_energy default
    assert feats.shape[1:] == ref.shape and (feats[0] - ref).abs().max() < TOL
    plain = MFCC(FeatureConfig(kind="mfcc", n_mels=23, use_energy=False, raw_energy=False))
    ref = K.mfcc(wave[None] * 32768, use_energy=False, raw_energy=False)
    assert (plain(wave[None], torch.tensor([n]))[0][0] - ref).abs().max() < TOL


def test_mfcc_matches_torchaudio_on_real_speech(real_waves):
    m32, m64 = MFCC(), MFCC(dtype=torch.float64)
    for wave in real_waves:
        exact = K.mfcc(wave[None].double() * 32768, use_energy=True)
        assert (m64(wave[None], torch.tensor([len(wave)]))[0][0] - exact).abs().max() < TOL
        ref = K.mfcc(wave[None] * 32768, use_energy=True)
        ours = m32(wave[None], torch.tensor([len(wave)]))[0][0]
        # The DCT spreads each band's float32 noise over all cepstra, so compare at the
        # level of torchaudio's own float32 error, plus TOL.
        assert (ours - ref).abs().max() < TOL + 2 * (ref - exact).abs().max()


def test_mfcc_energy_survives_a_dc_offset():
    wave = noise(4000, 3) * 0.001 + 0.5  # quiet signal on a large DC offset
    feats, _ = MFCC()(wave[None], torch.tensor([4000]))
    exact = K.mfcc(wave[None].double() * 32768, use_energy=True)
    assert (feats[0, :, 0] - exact[:, 0]).abs().max() < TOL


# --------------------------------------------------------------------------- deltas


def kaldi_deltas_numpy(x: np.ndarray) -> np.ndarray:
    """Kaldi's compute-deltas (order 2, window 2) written out: filters on the original frames, edges clamped."""
    d1 = np.array([-2, -1, 0, 1, 2]) / 10.0
    d2 = np.convolve(d1, d1)  # 9 taps
    T = len(x)
    out = [x]
    for taps in (d1, d2):
        half = len(taps) // 2
        out.append(sum(w * x[np.clip(np.arange(T) + j - half, 0, T - 1)] for j, w in enumerate(taps)))
    return np.concatenate(out, axis=1)


def test_deltas_match_kaldi_and_torchaudio():
    x = torch.randn(1, 37, 5)
    ours = add_deltas(x, torch.tensor([37]))[0]
    assert torch.allclose(ours, torch.from_numpy(kaldi_deltas_numpy(x[0].numpy())).float(), atol=1e-5)
    d1 = AF.compute_deltas(x.transpose(1, 2)).transpose(1, 2)[0]  # replicate padding = Kaldi's clamping
    assert torch.allclose(ours[:, 5:10], d1, atol=1e-5)
    d2 = AF.compute_deltas(AF.compute_deltas(x.transpose(1, 2))).transpose(1, 2)[0]
    assert torch.allclose(ours[4:-4, 10:], d2[4:-4], atol=1e-5)  # equal away from the edges


def test_deltas_stop_at_each_utterance_end():
    a, b = torch.randn(20, 3), torch.randn(9, 3)
    batch = torch.zeros(2, 20, 3)
    batch[0], batch[1, :9] = a, b
    out = add_deltas(batch, torch.tensor([20, 9]))
    assert torch.allclose(out[1, :9], add_deltas(b[None], torch.tensor([9]))[0], atol=1e-6)


# --------------------------------------------------------------------------- librosa


def test_librosa_mel_matches_librosa(some_speech):
    module = LibrosaMel()
    for wave in [noise(1000, 1), noise(16001, 2)] + some_speech:
        ref = librosa.feature.melspectrogram(
            y=wave.numpy(), sr=16000, n_fft=512, hop_length=160, win_length=400, window="hann", center=True,
            pad_mode="constant", power=2.0, n_mels=80, fmin=20.0, fmax=8000.0, htk=False, norm="slaney",
        ).T
        feats, frame_lengths = module(wave[None], torch.tensor([len(wave)]))
        assert feats.shape[1:] == ref.shape and int(frame_lengths) == 1 + len(wave) // 160
        assert np.abs(feats[0].numpy() - np.log(ref + 1e-6)).max() < TOL


# --------------------------------------------------------------------------- CMVN


def padded_feats(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 10, 0])
    feats = torch.randn(4, 10, 6, generator=g) * 3 + 5
    for i, n in enumerate(lengths.tolist()):
        feats[i, n:] = 1e6  # padding that must be ignored
    return feats, lengths


def test_cmvn_stats_match_numpy_over_valid_frames():
    feats, lengths = padded_feats()
    valid = np.concatenate([feats[i, :n].numpy() for i, n in enumerate(lengths.tolist())]).astype(np.float64)
    stats = CMVNStats(6).update(feats, lengths)
    assert stats.count == 20
    assert np.allclose(stats.mean.numpy(), valid.mean(0)) and np.allclose(stats.std().numpy(), valid.std(0))
    half = CMVNStats(6).update(feats[:2], lengths[:2]).merge(CMVNStats(6).update(feats[2:], lengths[2:]))
    assert half.count == 20 and torch.allclose(half.mean, stats.mean) and torch.allclose(half.std(), stats.std())
    again = CMVNStats.from_dict(stats.to_dict())
    assert again.count == stats.count and torch.equal(again.sum_sq, stats.sum_sq)
    constant = CMVNStats(2).update(torch.ones(1, 4, 2), torch.tensor([4]))
    assert torch.all(constant.std(floor=0.01) == 0.01)


def test_global_cmvn_normalises_valid_frames_and_keeps_padding_zero():
    feats, lengths = padded_feats()
    cmvn = GlobalCMVN(6)
    cmvn.set_stats(CMVNStats(6).update(feats, lengths))
    out, out_lengths = cmvn(feats, lengths)
    assert torch.equal(out_lengths, lengths)
    valid = torch.cat([out[i, :n] for i, n in enumerate(lengths.tolist())])
    assert torch.allclose(valid.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(valid.std(0, unbiased=False), torch.ones(6), atol=1e-4)
    assert all(torch.all(out[i, n:] == 0) for i, n in enumerate(lengths.tolist()))
    assert set(cmvn.state_dict()) == {"mean", "istd"}


def test_utterance_mvn_centres_each_utterance():
    feats, lengths = padded_feats()
    for norm_vars in (False, True):
        out, _ = UtteranceMVN(norm_vars=norm_vars)(feats, lengths)
        for i, n in enumerate(lengths.tolist()):
            assert torch.all(out[i, n:] == 0)
            if n:
                assert torch.allclose(out[i, :n].mean(0), torch.zeros(6), atol=1e-4)
                if norm_vars and n > 1:
                    assert torch.allclose(out[i, :n].std(0, unbiased=False), torch.ones(6), atol=1e-3)


def test_compute_cmvn_uses_eval_mode_and_restores_it():
    fb = Fbank(FeatureConfig(dither=1.0)).train()
    batches = [pad_batch([noise(4000, 1), noise(3000, 2)]), pad_batch([noise(5000, 3)])]
    stats = compute_cmvn(fb, batches)
    assert fb.training
    feats = [fb.eval()(w, n) for w, n in batches]
    expected = CMVNStats(80)
    for f, n in feats:
        expected.update(f, n)
    assert stats.count == expected.count == sum(int(n.sum()) for _, n in feats) and torch.allclose(stats.mean, expected.mean)


# --------------------------------------------------------------------------- SpecAugment


def test_specaugment_is_identity_in_eval_mode():
    feats, lengths = padded_feats()
    aug = SpecAugment(SpecAugmentConfig(time_warp=3)).eval()
    out, out_lengths = aug(feats, lengths)
    assert torch.equal(out, feats) and torch.equal(out_lengths, lengths)


def test_specaugment_masks_stay_inside_bounds_and_utterances():
    lengths = torch.tensor([50, 20, 1, 0])
    feats = torch.rand(4, 50, 16) + 1.0  # never 0, so zeros mark the masks
    for i, n in enumerate(lengths.tolist()):
        feats[i, n:] = -7.0  # padding sentinel
    time_only = SpecAugment(SpecAugmentConfig(freq_masks=0, time_masks=3, time_width=0.2, time_width_max=4)).train()
    freq_only = SpecAugment(SpecAugmentConfig(freq_masks=2, freq_width=5, time_masks=0)).train()
    torch.manual_seed(0)
    masked_frames = masked_bins = 0
    for _ in range(30):
        t_out, _ = time_only(feats, lengths)
        f_out, _ = freq_only(feats, lengths)
        for i, n in enumerate(lengths.tolist()):
            assert torch.all(t_out[i, n:] == -7.0) and torch.all(f_out[i, n:] == -7.0), "padding must be untouched"
            frames = (t_out[i, :n] == 0).all(1)  # whole frames are masked ...
            assert torch.equal(frames, (t_out[i, :n] == 0).any(1))
            assert frames.sum() <= 3 * min(4, int(0.2 * n))  # ... at most 3 masks of at most 20 % (cap 4)
            if n:
                bins = (f_out[i, 0] == 0)  # the same bins in every valid frame ...
                assert torch.equal((f_out[i, :n] == 0), bins.expand(n, -1))
                assert bins.sum() <= 2 * 5  # ... at most 2 masks of at most 5 bins
                masked_bins += int(bins.sum())
            masked_frames += int(frames.sum())
    assert masked_frames > 0 and masked_bins > 0


def test_specaugment_is_repeatable_under_a_seed():
    feats, lengths = padded_feats()
    aug = SpecAugment(SpecAugmentConfig(freq_width=3, time_width=3.0, time_warp=2)).train()
    torch.manual_seed(3)
    a, _ = aug(feats, lengths)
    torch.manual_seed(3)
    b, _ = aug(feats, lengths)
    assert torch.equal(a, b)


def test_time_warp_keeps_shape_padding_and_endpoints():
    aug = SpecAugment(SpecAugmentConfig(freq_masks=0, time_masks=0, time_warp=5)).train()
    lengths = torch.tensor([60, 30])
    feats = torch.randn(2, 60, 4)
    feats[1, 30:] = 0
    torch.manual_seed(1)
    changed = False
    for _ in range(5):
        out, _ = aug(feats, lengths)
        assert out.shape == feats.shape and torch.all(out[1, 30:] == 0)
        changed |= not torch.equal(out, feats)
    assert changed


# --------------------------------------------------------------------------- Frontend


def test_frontend_pipeline_and_checkpoint_round_trip():
    cfg = FrontendConfig(features=FeatureConfig(n_mels=40), cmvn="global", specaug=SpecAugmentConfig())
    assert from_dict(FrontendConfig, to_dict(cfg)) == cfg
    assert from_dict(FrontendConfig, {"specaug": None}).specaug is None
    front = Frontend(cfg)
    assert front.output_dim == 40
    waves, lengths = pad_batch([noise(8000, 1), noise(5000, 2)])
    front.set_cmvn(compute_cmvn(front.features, [(waves, lengths)]))
    state = front.state_dict()
    assert set(state) == {"cmvn.mean", "cmvn.istd"}
    fresh = Frontend(cfg)
    fresh.load_state_dict(state)  # buffers exist with their final shape before any statistics
    front.eval(), fresh.eval()
    a, la = front(waves, lengths)
    b, lb = fresh(waves, lengths)
    assert torch.equal(a, b) and torch.equal(la, lb) and a.shape == (2, 48, 40)
    valid = torch.cat([a[0, : la[0]], a[1, : la[1]]])
    assert valid.mean().abs() < 1e-3
    with pytest.raises(ValueError, match="global"):
        Frontend(FrontendConfig(cmvn="none")).set_cmvn(CMVNStats(80))


def test_frontend_output_dims():
    assert Frontend(FrontendConfig(features=FeatureConfig(kind="mfcc", n_mels=23, deltas=True))).output_dim == 39
    assert Frontend(FrontendConfig(features=FeatureConfig(kind="librosa_mel", n_mels=64), cmvn="utterance")).output_dim == 64


def test_bad_feature_configs_are_rejected():
    for bad in [{"n_mels": 2}, {"low_freq": 9000.0}, {"kind": "mfcc", "n_mfcc": 100}, {"frame_length_ms": 0.05}]:
        with pytest.raises(ValueError):
            FeatureConfig(**bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    waves, lengths = pad_batch([noise(16000, 1), noise(7000, 2), noise(300, 3)])
    for cfg in (FrontendConfig(), FrontendConfig(features=FeatureConfig(kind="mfcc", n_mels=23, deltas=True), cmvn="utterance"),
                FrontendConfig(features=FeatureConfig(kind="librosa_mel"), specaug=SpecAugmentConfig())):
        cpu = Frontend(cfg).eval()
        gpu = Frontend(cfg).eval().cuda()
        a, la = cpu(waves, lengths)
        with torch.autocast("cuda", dtype=torch.bfloat16):  # features stay float32 under autocast
            b, lb = gpu(waves.cuda(), lengths.cuda())
        assert b.dtype == torch.float32 and torch.equal(la, lb.cpu())
        assert (a - b.cpu()).abs().max() < 1e-2
        gpu.train()(waves.cuda(), lengths.cuda())  # SpecAugment and dither run on the device too


def test_mel_floor_makes_digital_silence_and_sub_lsb_noise_read_alike() -> None:
    """Kaldi floors mel energies at FLT_EPSILON: digital zeros read ~20 nats below one-LSB noise.
    With `mel_floor` both read as the floor, and bands above it are Kaldi's values unchanged."""
    torch.manual_seed(0)
    speech = 0.1 * torch.randn(1, 8000)
    quiet = torch.cat([speech, torch.zeros(1, 8000)], dim=1)  # speech, then digital silence
    noisy = torch.cat([speech, torch.randn(1, 8000) * 0.1 / 32768], dim=1)  # speech, then sub-LSB noise
    lengths = torch.tensor([16000])
    kaldi = build_features(FeatureConfig(n_mels=40)).eval()
    floored = build_features(FeatureConfig(n_mels=40, mel_floor=200.0)).eval()
    gap = lambda f: float((f(noisy, lengths)[0][0, -20:] - f(quiet, lengths)[0][0, -20:]).abs().max())  # noqa: E731
    assert gap(kaldi) > 10.0 and gap(floored) < 1e-5
    assert torch.allclose(floored(speech, torch.tensor([8000]))[0], kaldi(speech, torch.tensor([8000]))[0])
    ref = K.fbank(quiet * 32768, num_mel_bins=40, dither=0.0)  # the default is Kaldi's, digital zeros and all
    assert torch.allclose(kaldi(quiet, lengths)[0][0], ref, atol=1e-3)
