"""Attention: masking, the location term, references for each kind, and a finite-difference gradient check."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from asr.models.attention import AttentionConfig, LocationAttention, build_attention, uniform_weights
from asr.models.listener import Listener, ListenerConfig, time_mask

KINDS = ["location", "additive", "dot"]
B, T, D, Q = 3, 11, 6, 5


pytestmark = pytest.mark.usefixtures("one_thread")


def setup(kind: str, **kw):
    torch.manual_seed(0)
    cfg = AttentionConfig(kind=kind, **{"dim": 7, "conv_channels": 3, "conv_kernel": 5, **kw})
    att = build_attention(cfg, Q, D)
    enc = torch.randn(B, T, D)
    mask = time_mask(torch.tensor([11, 6, 1]), T)
    return att, enc, mask, torch.randn(B, Q)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("smoothing", [False, True])
def test_padded_frames_get_zero_weight_and_weights_sum_to_one(kind: str, smoothing: bool) -> None:
    att, enc, mask, query = setup(kind, smoothing=smoothing, sharpening=2.0)
    context, weights = att(query, enc, att.preprocess(enc), mask, uniform_weights(mask))
    assert context.shape == (B, D) and weights.shape == (B, T)
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights.sum(1), torch.ones(B))
    torch.testing.assert_close(context, torch.einsum("bt,btd->bd", weights, enc))


@pytest.mark.parametrize("kind", KINDS)
def test_padding_content_does_not_leak(kind: str) -> None:
    att, enc, mask, query = setup(kind)
    prev = torch.softmax(torch.randn(B, T).masked_fill(~mask, float("-inf")), 1)
    garbage = enc.masked_fill(~mask.unsqueeze(-1), 1e3)
    a = att(query, enc, att.preprocess(enc), mask, prev)
    b = att(query, garbage, att.preprocess(garbage), mask, prev)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    # utterance 1 alone (6 frames) == inside the batch
    c, w = att(query[1:2], enc[1:2, :6], att.preprocess(enc[1:2, :6]), mask[1:2, :6], prev[1:2, :6])
    torch.testing.assert_close(c, a[0][1:2], atol=1e-6, rtol=0)
    torch.testing.assert_close(w, a[1][1:2, :6], atol=1e-6, rtol=0)


def test_location_term_uses_previous_weights() -> None:
    att, enc, mask, query = setup("location")
    keys = att.preprocess(enc)
    prev_a = uniform_weights(mask)
    prev_b = torch.zeros(B, T)
    prev_b[:, 0] = 1.0
    _, wa = att(query, enc, keys, mask, prev_a)
    _, wb = att(query, enc, keys, mask, prev_b)
    assert (wa - wb).abs().max() > 1e-3
    for kind in ("additive", "dot"):
        att2, *_ = setup(kind)
        k2 = att2.preprocess(enc)
        torch.testing.assert_close(att2(query, enc, k2, mask, prev_a), att2(query, enc, k2, mask, prev_b))


@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("kernel", [5, 41], ids=["direct-conv", "fft-conv"])
def test_location_energies_match_the_formula(kernel: int, grad: bool, monkeypatch) -> None:
    import asr.models.attention as attention

    monkeypatch.setattr(attention, "INFERENCE_BLOCK", 2 * T * 7)  # inference: blocks of 2 rows, one partial
    att, enc, mask, query = setup("location", conv_kernel=kernel)
    assert isinstance(att, LocationAttention)
    prev = torch.rand(B, T)
    K = att.cfg.conv_kernel
    kernel = att.conv.weight[:, 0, :]  # (C, K)
    padded = torch.nn.functional.pad(prev, (K // 2, K // 2))
    f = torch.stack([torch.stack([(kernel * padded[b, t : t + K]).sum(-1) for t in range(T)]) for b in range(B)])
    W, V, bias, U, w = att.query.weight, att.key.weight, att.key.bias, att.location.weight, att.score.weight[0]
    pre = query @ W.T
    ref = torch.tanh(pre[:, None, :] + enc @ V.T + bias + f @ U.T) @ w  # (B, T)
    with torch.set_grad_enabled(grad):
        got = att.energies(query, att.preprocess(enc), prev)
        masked = att.energies(query, att.preprocess(enc), prev, mask)  # lengths 11, 6, 1: blocks of 11 and 1
    assert got.requires_grad == grad
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked[mask], ref[mask], atol=1e-5, rtol=1e-5)  # padded frames may differ
    assert torch.isfinite(masked).all()


@pytest.mark.parametrize("kind", KINDS)
def test_queries_past_live_are_left_out_and_the_others_unchanged(kind: str) -> None:
    """Groups of 4 queries per utterance of which only the first live[m] count (padding rows of
    shared beam search): theirs are the numbers of a full computation, the others finite."""
    att, enc, mask, _ = setup(kind)
    g = torch.Generator().manual_seed(3)
    query = torch.randn(B * 4, Q, generator=g)
    prev = torch.softmax(torch.randn(B * 4, T, generator=g).masked_fill(~mask.repeat_interleave(4, 0), -1e9), 1)
    live = [2, 4, 1]
    used = torch.tensor([r % 4 < live[r // 4] for r in range(B * 4)])
    with torch.no_grad():
        keys = att.preprocess(enc)
        full = att(query, enc, keys, mask, prev)
        part = att(query, enc, keys, mask, prev, live)
    for x, y in zip(full, part):
        torch.testing.assert_close(y[used], x[used], atol=1e-6, rtol=0)
        assert torch.isfinite(y).all()
    if kind == "location":  # the costly one skips them on the CPU: their energies were never computed
        with torch.no_grad():
            skipped = att.energies(query, keys, prev, mask, live)[~used]
            torch.testing.assert_close(skipped, torch.full_like(skipped, -att.score.weight.sum().item()))


def test_additive_energies_match_the_formula() -> None:
    att, enc, mask, query = setup("additive")
    W, V, bias, w = att.query.weight, att.key.weight, att.key.bias, att.score.weight[0]
    ref = torch.tanh((query @ W.T)[:, None, :] + enc @ V.T + bias) @ w
    with torch.no_grad():
        torch.testing.assert_close(att.energies(query, att.preprocess(enc), None), ref, atol=1e-5, rtol=1e-5)


def test_score_tanh_equals_tanh_in_value_and_gradient() -> None:
    from asr.models.attention import score_tanh

    torch.manual_seed(0)
    score = torch.nn.Linear(64, 1, bias=False).double()
    x = (torch.randn(5, 40, 64, dtype=torch.float64) * 6).requires_grad_()  # saturated and linear ranges
    got = score_tanh(score, 2 * x)
    ref = score(torch.tanh(x)).squeeze(-1)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
    g_got, = torch.autograd.grad(got.sum(), x)
    g_ref, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g_got, g_ref, atol=1e-12, rtol=0)
    with torch.no_grad():  # float32: within a few 1e-7 per unit of |w|
        x32, score32 = x.detach().float(), copy.deepcopy(score).float()
        err = (score_tanh(score32, 2 * x32).double() - score(torch.tanh(x.detach())).squeeze(-1)).abs().max()
    assert err < 1e-5 * score.weight.abs().sum()


def test_dot_energies_and_sharpening_and_smoothing() -> None:
    att, enc, mask, query = setup("dot")
    with torch.no_grad():
        keys = att.preprocess(enc)
        e = (keys * att.query(query)[:, None, :]).sum(-1) / math.sqrt(att.cfg.dim)
        torch.testing.assert_close(att.energies(query, keys, None), e)
        sharp, *_ = setup("dot", sharpening=3.0)
        sharp.load_state_dict(att.state_dict())
        _, w = sharp(query, enc, keys, mask, None)
        torch.testing.assert_close(w, torch.softmax((3.0 * e).masked_fill(~mask, float("-inf")), 1))
        smooth, *_ = setup("dot", smoothing=True)
        smooth.load_state_dict(att.state_dict())
        _, w = smooth(query, enc, keys, mask, None)
        s = torch.sigmoid(e) * mask
        torch.testing.assert_close(w, s / s.sum(1, keepdim=True))


def test_config_rejects_even_kernel() -> None:
    with pytest.raises(ValueError):
        AttentionConfig(conv_kernel=4)
    with pytest.raises(ValueError):
        AttentionConfig(sharpening=0.0)


def test_gradcheck_listener_and_location_attention() -> None:
    """Finite differences (float64) through a tiny listener (reverse impl) and location attention."""
    torch.manual_seed(0)
    listener = Listener(ListenerConfig(input_dim=3, layers=2, hidden=2, reduce=(1, 2), projection=3)).double()
    att = build_attention(AttentionConfig(dim=4, conv_channels=2, conv_kernel=3), 2, 3).double()
    lengths = torch.tensor([6, 4])
    mask = time_mask(torch.div(lengths, 2, rounding_mode="floor"), 3)

    def fn(x: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enc, _ = listener(x, lengths, impl="reverse")
        keys = att.preprocess(enc)
        c1, w1 = att(query, enc, keys, mask, uniform_weights(mask).double())
        c2, w2 = att(query * 0.5, enc, keys, mask, w1)  # second step depends on the first weights
        return c2, w2

    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    query = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x, query), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_window_keeps_attention_near_the_previous_peak(kind):
    torch.manual_seed(0)
    cfg = AttentionConfig(kind=kind, dim=8, conv_channels=2, conv_kernel=5, window=3, window_back=1)
    att = build_attention(cfg, Q, D)
    enc, query = torch.randn(B, T, D), torch.randn(B, Q)
    lengths = torch.tensor([T, 7, 5])
    mask = time_mask(lengths, T)
    # At the start the previous weights are uniform: the window opens at the first frame.
    _, w = att(query, enc, att.preprocess(enc), mask, uniform_weights(mask))
    assert torch.all(w[:, 4:] == 0) and torch.allclose(w.sum(1), torch.ones(B))
    # Later, frames outside [peak - 1, peak + 3] get no weight, and padding never does.
    prev = torch.zeros(B, T)
    prev[0, 6], prev[1, 5], prev[2, 4] = 1.0, 1.0, 1.0
    _, w = att(query, enc, att.preprocess(enc), mask, prev)
    for b, peak in enumerate([6, 5, 4]):
        visible = torch.zeros(T, dtype=torch.bool)
        visible[peak - 1: min(peak + 4, int(lengths[b]))] = True
        assert torch.all(w[b, ~visible] == 0) and torch.all(w[b, visible] > 0)
