"""The whole LAS model: batch consistency, losses against independent references, greedy search, overfitting."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from asr.config import from_dict, to_dict
from asr.errors import AsrError
from asr.models import CTCHead, LASConfig, build_las
from asr.models.attention import AttentionConfig
from asr.models.listener import ListenerConfig
from asr.models.speller import SpellerConfig
from asr.search import greedy_search

GO, EOS, V, F = 1, 2, 8, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**kw) -> LASConfig:
    return LASConfig(
        listener=ListenerConfig(layers=2, hidden=8, reduce=(1, 2), projection=6),
        speller=SpellerConfig(embed_dim=6, hidden=12, attention=AttentionConfig(dim=8, conv_channels=3, conv_kernel=5)),
        **{"ctc_weight": 0.3, "label_smoothing": 0.1, **kw})


def tiny_model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_las(tiny_config(**kw), V, input_dim=F).eval()


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([12, 20, 7])
    feats = torch.randn(3, 22, F, generator=g)
    feats[0, 12:] = 50.0  # garbage padding
    target_lengths = torch.tensor([3, 5, 0])
    targets = torch.randint(3, V, (3, 6), generator=g)
    targets[torch.arange(6) >= target_lengths[:, None]] = 0
    return feats, lengths, targets, target_lengths


def test_utterance_alone_equals_inside_padded_batch() -> None:
    model = tiny_model()
    feats, lengths, targets, tlens = data()
    with torch.no_grad():
        enc, enc_lens = model.encode_features(feats, lengths)
        tok_in, _, _ = model.teacher_inputs(targets, tlens)
        logits, weights = model.speller(enc, enc_lens, tok_in)
        out = model.forward_features(feats, lengths, targets, tlens)
        weighted = 0.0
        for i in range(3):
            n, u = int(lengths[i]), int(tlens[i])
            e1, l1 = model.encode_features(feats[i : i + 1, :n], lengths[i : i + 1])
            m = int(l1)
            torch.testing.assert_close(e1[0], enc[i, :m], atol=1e-5, rtol=0)
            g1, w1 = model.speller(e1, l1, tok_in[i : i + 1, : u + 1])
            torch.testing.assert_close(g1[0], logits[i, : u + 1], atol=1e-5, rtol=0)
            torch.testing.assert_close(w1[0], weights[i, : u + 1, :m], atol=1e-5, rtol=0)
            one = model.forward_features(feats[i : i + 1, :n], lengths[i : i + 1], targets[i : i + 1, :u],
                                         tlens[i : i + 1])
            assert int(one["tokens"]) == u + 1
            weighted += float(one["att_loss"]) * (u + 1)
        # per-token normalisation: the batch loss is the token-weighted mean of the utterances' losses
        assert math.isclose(float(out["att_loss"]), weighted / int(out["tokens"]), rel_tol=1e-5)


def test_teacher_inputs_place_go_and_eos() -> None:
    model = tiny_model()
    targets = torch.tensor([[5, 6, 7], [4, 0, 0]])
    tok_in, tok_out, valid = model.teacher_inputs(targets, torch.tensor([3, 1]))
    assert tok_in.tolist() == [[GO, 5, 6, 7], [GO, 4, 0, 0]]
    assert tok_out[0].tolist() == [5, 6, 7, EOS] and tok_out[1, :2].tolist() == [4, EOS]
    assert valid.tolist() == [[True] * 4, [True, True, False, False]]


def test_loss_matches_a_hand_written_reference() -> None:
    model = tiny_model()
    feats, lengths, targets, tlens = data()
    with torch.no_grad():
        out = model.forward_features(feats, lengths, targets, tlens)
        enc, enc_lens = model.encode_features(feats, lengths)
        tok_in, tok_out, valid = model.teacher_inputs(targets, tlens)
        logp = torch.log_softmax(model.speller(enc, enc_lens, tok_in)[0], -1)
        eps, total, n = 0.1, 0.0, 0
        for b in range(3):
            for u in range(int(tlens[b]) + 1):
                lp = logp[b, u]
                total += -(1 - eps) * lp[tok_out[b, u]] - eps * lp.mean()
                n += 1
        att = total / n
        ctc = model.ctc.loss(enc, enc_lens, targets, tlens, reduction="sum") / tlens.sum()
    assert int(out["tokens"]) == n
    torch.testing.assert_close(out["att_loss"], att)
    torch.testing.assert_close(out["ctc_loss"], ctc)
    torch.testing.assert_close(out["loss"], 0.7 * att + 0.3 * ctc)
    assert 0.0 <= float(out["accuracy"]) <= 1.0
    plain = tiny_model(ctc_weight=0.0)
    assert plain.ctc is None and plain.forward_features(feats, lengths, targets, tlens)["ctc_loss"] is None


def brute_force_ctc(logp: torch.Tensor, target: list[int], blank: int = 0) -> float:
    """-log P(target) by summing over every frame labelling (T frames, V classes): independent of torch."""
    total = 0.0
    t, v = logp.shape
    for path in itertools.product(range(v), repeat=t):
        collapsed = [c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])]
        if collapsed == target:
            total += math.exp(sum(float(logp[i, c]) for i, c in enumerate(path)))
    return -math.log(total)


def test_ctc_loss_matches_brute_force() -> None:
    torch.manual_seed(0)
    head = CTCHead(enc_dim=5, vocab_size=3)
    enc = torch.randn(3, 5, 5)
    enc_lens = torch.tensor([5, 4, 3])
    targets = torch.tensor([[1, 2, 1], [1, 1, 0], [2, 0, 0]])
    tlens = torch.tensor([3, 2, 1])
    with torch.no_grad():
        per_utt = head.loss(enc, enc_lens, targets, tlens, reduction="none")
        logp = head.log_probs(enc)
        for b in range(3):
            ref = brute_force_ctc(logp[b, : enc_lens[b]], targets[b, : tlens[b]].tolist())
            assert math.isclose(float(per_utt[b]), ref, rel_tol=1e-5)
        torch.testing.assert_close(head.loss(enc, enc_lens, targets, tlens), per_utt.sum() / 3)
        torch.testing.assert_close(head.loss(enc, enc_lens, targets, tlens, reduction="token"), per_utt.sum() / 6)
        # impossible alignment (2 frames, 3 labels) gives 0, not inf
        assert float(head.loss(enc[:1], torch.tensor([2]), targets[:1], tlens[:1], reduction="none")[0]) == 0.0


def test_frontend_is_applied_before_the_listener() -> None:
    class Frames(torch.nn.Module):
        """Cuts waves (B, N) into frames of F samples."""

        output_dim = F

        def forward(self, waves, lengths):
            b, n = waves.shape
            return waves[:, : n // F * F].reshape(b, n // F, F), lengths // F

    torch.manual_seed(0)
    model = build_las(tiny_config(), V, Frames()).eval()
    feats, lengths, targets, tlens = data()
    waves = feats.reshape(3, -1)
    with torch.no_grad():
        a = model(waves, lengths * F, targets, tlens)
        b = model.forward_features(feats, lengths, targets, tlens)
    torch.testing.assert_close(a["loss"], b["loss"])


@pytest.mark.parametrize("bad_targets, bad_lengths", [([[3, 99]], [2]), ([[3, -1]], [2]), ([[3, 4]], [3])])
def test_bad_targets_are_user_errors(bad_targets, bad_lengths) -> None:
    model = tiny_model()
    feats, lengths, _, _ = data()
    with pytest.raises(AsrError):
        model.forward_features(feats[:1], lengths[:1], torch.tensor(bad_targets), torch.tensor(bad_lengths))


def test_config_round_trips_through_plain_dicts() -> None:
    cfg = tiny_config()
    assert from_dict(LASConfig, to_dict(cfg)) == cfg
    assert from_dict(LASConfig, {"listener": {"impl": "packed", "reduce": [2, 2, 2]}}).listener.reduce == (2, 2, 2)
    with pytest.raises(AsrError):
        from_dict(LASConfig, {"listener": {"reduce": [1, 2]}})  # one factor per layer
    with pytest.raises(ValueError):
        build_las(LASConfig(listener=ListenerConfig(input_dim=40)), V, input_dim=80)


def test_greedy_search_batched_equals_one_by_one_and_stops() -> None:
    model = tiny_model(seed=3)
    feats, lengths, _, _ = data()
    with torch.no_grad():
        enc, enc_lens = model.encode_features(feats, lengths)
        model.speller.output.bias[EOS] -= 4.0  # make early [EOS] rarer, so lengths differ
        batched = greedy_search(model, enc, enc_lens, max_len_ratio=1.0)
        for i in range(3):
            m = int(enc_lens[i])
            assert greedy_search(model, enc[i : i + 1, :m], enc_lens[i : i + 1], max_len_ratio=1.0) == [batched[i]]
            assert len(batched[i]) <= m and EOS not in batched[i]
        model.speller.output.bias[EOS] = -100.0  # never ends: stops at the length limits
        assert [len(h) for h in greedy_search(model, enc, enc_lens, max_len_ratio=0.5)] == [3, 5, 1]
        assert [len(h) for h in greedy_search(model, enc, enc_lens, max_len=2)] == [2, 2, 2]
        model.speller.output.bias[EOS] = 100.0  # ends at once
        assert greedy_search(model, enc, enc_lens) == [[], [], []]


@pytest.mark.parametrize("query", ["current", "previous"])
def test_tiny_model_overfits_and_greedy_search_recovers_the_targets(query: str) -> None:
    torch.manual_seed(0)
    cfg = LASConfig(
        listener=ListenerConfig(layers=2, hidden=24, reduce=(1, 2), projection=0),
        speller=SpellerConfig(embed_dim=16, hidden=48, query=query,
                              attention=AttentionConfig(dim=24, conv_channels=4, conv_kernel=7)),
        ctc_weight=0.3, label_smoothing=0.0)
    model = build_las(cfg, V, input_dim=F)
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([24, 30, 18, 27])
    feats = torch.randn(4, 30, F, generator=g)
    wanted = [[3, 4, 5], [7, 7, 3, 6], [5], [6, 3, 4, 7, 5]]
    tlens = torch.tensor([len(t) for t in wanted])
    targets = torch.zeros(4, 5, dtype=torch.long)
    for i, t in enumerate(wanted):
        targets[i, : len(t)] = torch.tensor(t)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):  # about 50 are needed
        out = model.forward_features(feats, lengths, targets, tlens)
        optimizer.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if float(out["att_loss"].detach()) < 0.01:
            break
    model.eval()
    with torch.no_grad():
        enc, enc_lens = model.encode_features(feats, lengths)
        assert greedy_search(model, enc, enc_lens, max_len=10) == wanted
