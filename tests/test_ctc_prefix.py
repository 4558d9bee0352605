"""CTC prefix scores against brute-force sums over every alignment, and against torch's ctc_loss."""

from __future__ import annotations

import doctest
import itertools

import pytest
import torch
import torch.nn.functional as F

import asr.ctc_prefix
from asr.ctc_prefix import CTCPrefixScorer

T, V = 5, 3  # 3^5 = 243 alignments per utterance
NEG_INF = float("-inf")


def collapse(path: tuple[int, ...], blank: int = 0) -> list[int]:
    """CTC output of a frame-level path: merge repeats, drop blanks."""
    out, prev = [], None
    for k in path:
        if k != prev and k != blank:
            out.append(k)
        prev = k
    return out


def brute_force(log_probs: torch.Tensor, length: int, prefix: list[int], exact: bool) -> float:
    """log sum over all alignments of `length` frames whose output starts with (or is) `prefix`."""
    terms = []
    for path in itertools.product(range(log_probs.shape[-1]), repeat=length):
        out = collapse(path)
        if (out == prefix) if exact else (out[: len(prefix)] == prefix):
            terms.append(sum(float(log_probs[t, k]) for t, k in enumerate(path)))
    return float(torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0)) if terms else NEG_INF


def walk(scorer: CTCPrefixScorer, utt: int, prefix: list[int]):
    """State of `prefix` built one token at a time; returns (state, prefix scores along the way)."""
    state = scorer.init_state(torch.tensor([utt]))
    psis = []
    for tok in prefix:
        psi = scorer.score(state, torch.tensor([[tok]]))[:, 0]
        state = scorer.extend(state, torch.tensor([0]), torch.tensor([tok]), psi)
        psis.append(float(psi))
    return state, psis


PREFIXES = [[1], [2], [1, 1], [1, 2], [2, 2, 1], [1, 2, 1], [1, 1, 1], [2, 1, 2, 1]]


@pytest.mark.parametrize("seed", [0, 1])
def test_prefix_and_full_scores_equal_brute_force(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    log_probs = (2 * torch.randn(2, T, V, generator=g)).log_softmax(-1)
    lengths = torch.tensor([T, T - 1])  # the second utterance is padded by one frame
    log_probs[1, T - 1] = torch.tensor([-50.0, 0.0, -50.0])  # padding must not count
    scorer = CTCPrefixScorer(log_probs, lengths, blank=0)
    for utt, prefix in itertools.product(range(2), PREFIXES):
        n = int(lengths[utt])
        state, psis = walk(scorer, utt, prefix)
        for i in range(1, len(prefix) + 1):
            want = brute_force(log_probs[utt], n, prefix[:i], exact=False)
            assert psis[i - 1] == pytest.approx(want, abs=1e-5) or psis[i - 1] == want == NEG_INF, (utt, prefix[:i])
        full = float(scorer.score_eos(state))
        want = brute_force(log_probs[utt], n, prefix, exact=True)
        assert full == pytest.approx(want, abs=1e-5) or full == want == NEG_INF, (utt, prefix)


def test_empty_prefix_and_blank() -> None:
    log_probs = torch.randn(1, T, V).log_softmax(-1)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([T]), blank=0)
    state = scorer.init_state(torch.tensor([0]))
    assert float(scorer.score_eos(state)) == pytest.approx(float(log_probs[0, :, 0].sum()), abs=1e-6)
    assert float(scorer.score(state, torch.tensor([[0]]))) == NEG_INF  # the blank is never a hypothesis token


def test_full_sequence_score_is_minus_ctc_loss() -> None:
    g = torch.Generator().manual_seed(3)
    b, t, v = 3, 40, 7
    log_probs = torch.randn(b, t, v, generator=g).log_softmax(-1)
    lengths = torch.tensor([40, 31, 12])
    targets = torch.randint(1, v, (b, 9), generator=g)
    target_lengths = torch.tensor([9, 5, 4])
    want = -F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths, reduction="none")
    scorer = CTCPrefixScorer(log_probs, lengths)
    for i in range(b):
        state, _ = walk(scorer, i, targets[i, : target_lengths[i]].tolist())
        assert float(scorer.score_eos(state)) == pytest.approx(float(want[i]), abs=1e-4)


def test_batched_candidates_equal_one_by_one() -> None:
    g = torch.Generator().manual_seed(5)
    log_probs = torch.randn(2, 20, 6, generator=g).log_softmax(-1)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([20, 13]))
    # Four hypotheses of two utterances, of different lengths and last tokens.
    states = [walk(scorer, u, p)[0] for u, p in [(0, [3, 4]), (0, [5]), (1, [2, 2, 4]), (1, [])]]
    fields = ("r_n", "r_b", "psi", "last", "utt")
    joined = type(states[0])(*(torch.cat([getattr(s, f) for s in states]) for f in fields))
    cands = torch.tensor([[1, 4, 5], [5, 3, 0], [4, 1, 2], [2, 3, 5]])
    psi = scorer.score(joined, cands)
    for n, state in enumerate(states):
        for c in range(3):
            alone = scorer.score(state, cands[n : n + 1, c : c + 1])
            assert float(psi[n, c]) == pytest.approx(float(alone), abs=1e-9) or float(alone) == NEG_INF
    # Extending several hypotheses at once equals extending each.
    rows, toks = torch.tensor([2, 0, 2]), torch.tensor([4, 1, 1])
    ext = scorer.extend(joined, rows, toks, psi[rows, torch.tensor([0, 0, 1])])
    for j in range(3):
        one = scorer.extend(states[int(rows[j])], torch.tensor([0]), toks[j : j + 1], ext.psi[j : j + 1])
        torch.testing.assert_close(ext.r_n[j : j + 1], one.r_n)
        torch.testing.assert_close(ext.r_b[j : j + 1], one.r_b)


def test_docstring_example() -> None:
    assert doctest.testmod(asr.ctc_prefix).failed == 0
