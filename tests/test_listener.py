"""Pyramidal BiLSTM listener: exact padding handling, both implementations, output lengths."""

from __future__ import annotations

import pytest
import torch

from asr.errors import AsrError
from asr.models.listener import Listener, ListenerConfig, reverse_index, stack_frames

IMPLS = ["reverse", "packed"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_listener(**kw) -> Listener:
    torch.manual_seed(0)
    cfg = dict(input_dim=5, layers=3, hidden=6, reduce=(1, 2, 2), projection=0)
    cfg.update(kw)
    return Listener(ListenerConfig(**cfg)).eval()


def padded_batch(lengths: list[int], dim: int = 5, extra: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features; padded frames hold large garbage (not zeros) so leaks would show."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths) + extra, dim, generator=g)
    for i, n in enumerate(lengths):
        x[i, n:] = 100.0 * torch.randn(x.shape[1] - n, dim, generator=g)
    return x, torch.tensor(lengths)


def bilstm_reference(rnn: torch.nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """Independent reference for one unpadded utterance (1, T, D): explicit forward and reversed passes."""
    fwd = torch.nn.LSTM(rnn.input_size, rnn.hidden_size, batch_first=True)
    bwd = torch.nn.LSTM(rnn.input_size, rnn.hidden_size, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(fwd, f"{name}_l0").copy_(getattr(rnn, f"{name}_l0"))
            getattr(bwd, f"{name}_l0").copy_(getattr(rnn, f"{name}_l0_reverse"))
        return torch.cat([fwd(x)[0], bwd(x.flip(1))[0].flip(1)], dim=-1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("subsample", ["concat", "skip"])
def test_padding_never_changes_an_utterance(impl: str, subsample: str) -> None:
    listener = make_listener(subsample=subsample, projection=4 if subsample == "skip" else 0)
    lengths = [9, 23, 17, 4]
    x, lens = padded_batch(lengths)
    assert_batch_equals_each_alone(listener, x, lens, impl)


def assert_batch_equals_each_alone(listener: Listener, x: torch.Tensor, lens: torch.Tensor,
                                   impl: str) -> torch.Tensor:
    """Each utterance of the padded batch encodes as it does alone, padded output frames are 0;
    returns the batch's output lengths."""
    with torch.no_grad():
        out, out_lens = listener(x, lens, impl=impl)
        for i, n in enumerate(lens.tolist()):
            alone, alone_len = listener(x[i : i + 1, :n], torch.tensor([n]), impl=impl)
            m = int(alone_len)
            assert int(out_lens[i]) == m
            h = listener.cfg.hidden
            # both directions separately: the forward half, then the backward half
            torch.testing.assert_close(out[i, :m, :h], alone[0, :, :h], atol=1e-5, rtol=0)
            torch.testing.assert_close(out[i, :m, h:], alone[0, :, h:], atol=1e-5, rtol=0)
            assert torch.all(out[i, m:] == 0)
    return out_lens


def test_one_layer_matches_an_independent_reference() -> None:
    listener = make_listener(layers=1, reduce=(1,))
    x, lens = padded_batch([7, 11])
    with torch.no_grad():
        out, _ = listener(x, lens, impl="reverse")
        for i, n in enumerate([7, 11]):
            ref = bilstm_reference(listener.rnns[0], x[i : i + 1, :n])
            torch.testing.assert_close(out[i : i + 1, :n], ref, atol=1e-5, rtol=0)


def test_reverse_equals_packed_values_and_gradients() -> None:
    listener = make_listener(projection=7, dropout=0.0)
    x, lens = padded_batch([13, 30, 21])
    results = {}
    for impl in IMPLS:
        listener.zero_grad()
        xi = x.clone().requires_grad_()
        out, out_lens = listener(xi, lens, impl=impl)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        results[impl] = (out.detach(), out_lens, xi.grad, [p.grad.clone() for p in listener.parameters()])
    (a, la, ga, pa), (b, lb, gb, pb) = results["reverse"], results["packed"]
    assert torch.equal(la, lb)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)
    for p, q in zip(pa, pb):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_skip_subsampling_matches_an_independent_reference() -> None:
    """ESPnet's blstmp: BiLSTM, every 2nd frame from the first, projection (tanh between layers);
    7 frames -> 4 -> 2, 12 -> 6 -> 3."""
    listener = make_listener(layers=3, reduce=(1, 2, 2), projection=4, subsample="skip")
    assert [rnn.input_size for rnn in listener.rnns] == [5, 4, 4]  # the input size does not grow
    x, lens = padded_batch([7, 12])
    with torch.no_grad():
        out, out_lens = listener(x, lens, impl="reverse")
        assert out_lens.tolist() == [2, 3] and out.shape[1] == 4  # ceil(ceil(15 / 2) / 2)
        for i, n in enumerate([7, 12]):
            y = x[i : i + 1, :n]
            for layer, (rnn, proj) in enumerate(zip(listener.rnns, listener.projections)):
                y = bilstm_reference(rnn, y)
                if layer < 2:
                    y = y[:, ::2]
                y = proj(y)
                if layer < 2:
                    y = torch.tanh(y)
            torch.testing.assert_close(out[i : i + 1, : y.shape[1]], y, atol=1e-5, rtol=0)
            assert torch.all(out[i, y.shape[1]:] == 0)


def test_output_lengths_drop_leftover_frames() -> None:
    listener = make_listener(reduce=(2, 1, 3))
    x, lens = padded_batch([6, 7, 11, 12, 13], extra=0)
    out, out_lens = listener(x, lens)
    # 6 -> 3 -> 3 -> 1; 7 -> 3 -> 1; 11 -> 5 -> 1; 12 -> 6 -> 2; 13 -> 6 -> 2
    assert out_lens.tolist() == [1, 1, 1, 2, 2]
    assert out.shape == (5, 13 // 2 // 3, 2 * 6)
    assert listener.cfg.total_reduction == 6


def test_stack_frames_concatenates_neighbours() -> None:
    x = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    y, lens = stack_frames(x, torch.tensor([5, 3]), 2)
    assert y.shape == (2, 2, 4) and lens.tolist() == [2, 1]
    assert y[0, 1].tolist() == x[0, 2:4].flatten().tolist()


def test_reverse_index_reverses_within_length_and_is_its_own_inverse() -> None:
    idx = reverse_index(torch.tensor([3, 5, 1]), 5)
    assert idx.tolist() == [[2, 1, 0, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]]
    assert torch.equal(idx.gather(1, idx), torch.arange(5).expand(3, 5))


def test_impls_share_one_state_dict() -> None:
    a = make_listener(impl="reverse", projection=4)
    b = make_listener(impl="packed", projection=4)
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict())
    assert make_listener(impl="auto").impl_for(torch.device("cpu")) == "reverse"
    assert make_listener(impl="auto").impl_for(torch.device("cuda")) == "packed"


def test_projection_sets_output_size() -> None:
    assert make_listener(projection=8).output_dim == 8
    assert make_listener(projection=0).output_dim == 12


def test_too_short_utterance_is_a_user_error() -> None:
    listener = make_listener()
    x, lens = padded_batch([9, 3])
    with pytest.raises(AsrError, match="utterance 1 of the batch has 3 frames"):
        listener(x, lens)
    out, out_lens = make_listener(subsample="skip")(x, lens)  # skipping leaves a frame of any input
    assert out_lens.tolist() == [3, 1]


@pytest.mark.parametrize("bad", [dict(reduce=(1, 2)), dict(reduce=(1, 0, 2)), dict(dropout=1.0), dict(hidden=0),
                                 dict(subsample="average")])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        ListenerConfig(**{"input_dim": 5, **bad})


@pytest.mark.parametrize("impl", IMPLS)
def test_conv_stem_keeps_padding_out_and_quarters_time(impl: str) -> None:
    listener = make_listener(input_dim=12, conv_stem=3, reduce=(1, 2, 1), projection=4)
    lengths = [40, 23, 11]  # 11 frames: the shortest the stem and one halving leave a frame for
    x, lens = padded_batch(lengths, dim=12)
    out_lens = assert_batch_equals_each_alone(listener, x, lens, impl)
    # (40 - 1) // 2 = 19, (19 - 1) // 2 = 9 stem frames, then halved: 4; 23 -> 11 -> 5 -> 2; 11 -> 5 -> 2 -> 1
    assert out_lens.tolist() == [4, 2, 1]
    # the stem's own frames against torch's convolution arithmetic
    stem_out = listener.stem.convs(x[:1, :40].unsqueeze(1))
    assert stem_out.shape[2] == 9
    assert listener.cfg.total_reduction == 8 and listener.cfg.min_frames == 11
    with pytest.raises(AsrError, match="has 10 frames"):
        listener(x[:1, :10], torch.tensor([10]))
