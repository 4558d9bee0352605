"""Speller: step-by-step decoding == teacher forcing, state reordering, scheduled sampling."""

from __future__ import annotations

import pytest
import torch

from asr.models.attention import AttentionConfig
from asr.models.speller import Speller, SpellerConfig, sibling_rows

V, D = 9, 6


pytestmark = pytest.mark.usefixtures("one_thread")


def make_speller(kind: str = "location", **kw) -> Speller:
    torch.manual_seed(0)
    cfg = SpellerConfig(vocab_size=V, embed_dim=5, hidden=7, attention=AttentionConfig(
        kind=kind, dim=4, conv_channels=2, conv_kernel=5), **kw)
    return Speller(cfg, D).eval()


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(3, 10, D, generator=g)
    lengths = torch.tensor([10, 4, 7])
    tokens = torch.randint(0, V, (3, 6), generator=g)
    tokens[:, 0] = 1  # [GO]
    return enc, lengths, tokens


@pytest.mark.parametrize("kind, extra", [("location", {}), ("location", dict(layers=2, output_hidden=8)),
                                         ("additive", {}), ("dot", dict(layers=3)),
                                         ("location", dict(query="previous")),
                                         ("dot", dict(query="previous", layers=2))])
def test_step_equals_teacher_forced_forward(kind: str, extra: dict) -> None:
    speller = make_speller(kind, **extra)
    enc, lengths, tokens = batch()
    with torch.no_grad():
        logits, weights = speller(enc, lengths, tokens)
        state = speller.init_state(enc, lengths)
        for i in range(tokens.shape[1]):
            log_probs, state = speller.step(state, tokens[:, i])
            torch.testing.assert_close(log_probs, torch.log_softmax(logits[:, i], -1), atol=1e-5, rtol=0)
            torch.testing.assert_close(state.weights, weights[:, i], atol=1e-5, rtol=0)
    assert logits.shape == (3, 6, V) and weights.shape == (3, 6, 10)
    assert torch.all(weights[1, :, 4:] == 0)


def test_index_select_reorders_and_expands_hypotheses() -> None:
    speller = make_speller(layers=2)
    enc, lengths, tokens = batch()
    with torch.no_grad():
        state = speller.init_state(enc, lengths)
        _, state = speller.step(state, tokens[:, 0])
        idx = torch.tensor([2, 0, 0, 1, 2, 2])  # reorder and repeat (beam expansion)
        moved = state.index_select(idx)
        assert moved.size == 6 and moved.enc.shape == (6, 10, D) and len(moved.h) == 2
        lp_moved, next_moved = speller.step(moved, tokens[idx, 1])
        lp, nxt = speller.step(state, tokens[:, 1])
        torch.testing.assert_close(lp_moved, lp[idx], atol=1e-6, rtol=0)
        torch.testing.assert_close(next_moved.weights, nxt.weights[idx], atol=1e-6, rtol=0)
        torch.testing.assert_close(next_moved.h[1], nxt.h[1][idx], atol=1e-6, rtol=0)
        assert torch.equal(next_moved.mask, state.mask[idx])
        expanded = state.index_select(torch.arange(3).repeat_interleave(4))
        assert expanded.size == 12 and torch.equal(expanded.context[4:8], state.context[[1] * 4])


@pytest.mark.parametrize("kind, extra", [("location", {}), ("additive", {}), ("dot", {}),
                                         ("location", dict(window=2))])
@pytest.mark.parametrize("inference, block", [(True, 120), (True, 1 << 18), (False, 1 << 18)])
@pytest.mark.parametrize("query", ["current", "previous"])
def test_beams_sharing_memory_step_as_beams_with_their_own(kind: str, extra: dict, inference: bool, block: int,
                                                            query: str, monkeypatch) -> None:
    """expand_beams keeps one memory row per utterance; every step, reorder and drop gives the
    numbers of a state holding a copy of the memory per hypothesis, stepped through the training
    code path (one query per memory row, autograd on). Block 120: 3 of 4 beams per block. With
    query "previous" the random reorders repeat parents, whose siblings attend once at inference."""
    import asr.models.attention as attention
    monkeypatch.setattr(attention, "INFERENCE_BLOCK", block)
    cfg = SpellerConfig(vocab_size=V, embed_dim=5, hidden=7, query=query, attention=AttentionConfig(
        kind=kind, dim=4, conv_channels=2, conv_kernel=5, **extra))
    torch.manual_seed(0)
    speller = Speller(cfg, D).eval()
    enc, lengths, _ = batch()
    g = torch.Generator().manual_seed(1)
    with torch.set_grad_enabled(not inference):
        state = speller.init_state(enc, lengths)
        shared = state.expand_beams(4)
        own = state.index_select(torch.arange(3).repeat_interleave(4))
        assert (shared.group, shared.enc.shape[0], own.group, own.enc.shape[0]) == (4, 3, 1, 12)
        for _ in range(3):
            tokens = torch.randint(0, V, (12,), generator=g)
            lp_shared, shared = speller.step(shared, tokens)
            with torch.enable_grad():
                lp_own, own = speller.step(own, tokens)
            torch.testing.assert_close(lp_shared, lp_own, atol=1e-6, rtol=0)
            torch.testing.assert_close(shared.weights, own.weights, atol=1e-6, rtol=0)
            within = (torch.arange(3).unsqueeze(1) * 4 + torch.randint(0, 4, (3, 4), generator=g)).view(-1)
            shared, own = shared.reorder_beams(within), own.index_select(within)
        survivors = torch.tensor([8, 9, 10, 11, 0, 1, 2, 3])  # utterance 1 finished, 2 and 0 swapped
        kept = shared.index_select(survivors)
        assert kept.group == 4 and torch.equal(kept.enc, enc[[2, 0]])
        scattered = torch.tensor([5, 0, 11])  # not in groups: each row gets its own memory
        loose = shared.index_select(scattered)
        assert loose.group == 1 and torch.equal(loose.enc, enc[[1, 0, 2]])
        for pick, other in ((kept, own.index_select(survivors)), (loose, own.index_select(scattered))):
            tokens = torch.randint(0, V, (pick.size,), generator=g)
            with torch.enable_grad():
                expected = speller.step(other, tokens)[0]
            torch.testing.assert_close(speller.step(pick, tokens)[0], expected, atol=1e-6, rtol=0)


def test_sibling_rows_pick_one_row_per_source_and_pad_utterances_to_the_same_count() -> None:
    source = torch.tensor([1, 1, 0, 1, 4, 5, 4, 7, 8, 8, 8, 8])  # 3 utterances of 4 rows: 2, 3, 1 sources
    compact, where, counts = sibling_rows(source, 4)
    assert counts == [2, 3, 1] and compact.numel() == 3 * 3  # padded to the widest utterance
    assert torch.equal(source[compact[where]], source)  # each row reads a row copied from its own source
    assert torch.equal(compact // 4, torch.arange(3).repeat_interleave(3))  # within its utterance
    assert torch.equal(where // 3, torch.arange(12) // 4)
    assert sibling_rows(torch.tensor([0, 1, 2, 3, 4, 5]), 3) is None  # no siblings: nothing to share
    assert sibling_rows(torch.tensor([0, 0, 2, 3, 4, 5]), 3) is None  # one utterance without: no gain
    assert sibling_rows(torch.tensor([3, 4]), 1) is None


def test_inference_tables_follow_the_weights() -> None:
    """The first cell's cached token gates and state weights are rebuilt when a weight behind them
    changes in place or is replaced (load_state_dict), so step keeps matching teacher forcing."""
    speller = make_speller(layers=2)
    enc, lengths, tokens = batch()
    with torch.no_grad():
        for change in ("embedding", "input bias", "recurrent weights", "state dict"):
            if change == "embedding":
                speller.embed.weight.mul_(1.5)
            elif change == "input bias":
                speller.cells[0].bias_ih.add_(0.3)
            elif change == "recurrent weights":
                speller.cells[0].weight_hh.mul_(-2.0)
            else:
                speller.load_state_dict(make_speller(layers=2, dropout=0.1).state_dict())
                speller.cells[0].weight_ih.mul_(-1.0)
            logits, _ = speller(enc, lengths, tokens)
            state = speller.init_state(enc, lengths)
            for i in range(3):  # from the second step on the previous state and context count
                log_probs, state = speller.step(state, tokens[:, i])
                torch.testing.assert_close(log_probs, torch.log_softmax(logits[:, i], -1), atol=1e-5, rtol=0)


def test_scheduled_sampling_feeds_own_greedy_tokens() -> None:
    speller = make_speller(scheduled_sampling=1.0)
    enc, lengths, tokens = batch()
    speller.train()  # sampling is on in training mode only (dropout is 0, so steps are deterministic)
    with torch.no_grad():
        logits, _ = speller(enc, lengths, tokens)
        state = speller.init_state(enc, lengths)
        feed = tokens[:, 0]
        for i in range(tokens.shape[1]):
            log_probs, state = speller.step(state, feed)
            torch.testing.assert_close(log_probs, torch.log_softmax(logits[:, i], -1), atol=1e-5, rtol=0)
            feed = log_probs.argmax(-1)
        speller.eval()  # no sampling at evaluation: teacher forcing again
        teacher, _ = make_speller()(enc, lengths, tokens)
        torch.testing.assert_close(speller(enc, lengths, tokens)[0], teacher)


def test_initial_state_attends_uniformly_over_valid_frames() -> None:
    speller = make_speller()
    enc, lengths, _ = batch()
    state = speller.init_state(enc, lengths)
    torch.testing.assert_close(state.weights[1, :4], torch.full((4,), 0.25))
    assert torch.all(state.weights[1, 4:] == 0) and torch.all(state.context == 0)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        SpellerConfig(scheduled_sampling=1.5)
    with pytest.raises(ValueError):
        Speller(SpellerConfig(), 4)  # vocab_size not set
    with pytest.raises(ValueError):
        SpellerConfig(query="next")
