"""CTC-only decoding (best path, prefix beam search against a brute-force search) and the
per-utterance fallback from an implausible attention hypothesis to CTC's."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from asr.ctc_decode import ctc_greedy, ctc_prefix_beam_search
from asr.models.ctc import CTCHead
from asr.models.lm import CharLM, CharLMConfig
from asr.search import DecodeOptions, Hypothesis, SearchError, _with_ctc_fallback, decode

pytestmark = pytest.mark.usefixtures("one_thread")
BLANK, GO, EOS = 0, 1, 2
LABELS = (3, 4, 5)
V = 6


def ctc_log_prob(lp: torch.Tensor, labels: list[int]) -> float:
    """log P(labels | frames) by torch's CTC loss: the independent reference."""
    target = torch.tensor([labels], dtype=torch.long) if labels else torch.zeros(1, 0, dtype=torch.long)
    loss = F.ctc_loss(lp.unsqueeze(1), target, torch.tensor([lp.shape[0]]), torch.tensor([len(labels)]),
                      blank=BLANK, reduction="sum")
    return -float(loss)


def lm_log_prob(lm: CharLM, labels: list[int]) -> float:
    tokens = torch.tensor([labels], dtype=torch.long) if labels else torch.zeros(1, 0, dtype=torch.long)
    with torch.no_grad():
        nll, _ = lm.loss(tokens, torch.tensor([len(labels)]))
    return -float(nll)


def random_frames(seed: int, T: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(T, V, generator=g)
    logits[:, [GO, EOS]] = -30.0  # the CTC head never emits [GO]/[EOS] in a trained model
    return logits.log_softmax(-1).double()


def brute_force(lp: torch.Tensor, lm: CharLM | None, lm_weight: float, bonus: float) -> list[tuple[float, list[int]]]:
    out = []
    for n in range(lp.shape[0] + 1):
        for seq in itertools.product(LABELS, repeat=n):
            score = ctc_log_prob(lp, list(seq))
            if score == float("-inf"):
                continue
            if lm is not None:
                score += lm_weight * lm_log_prob(lm, list(seq))
            out.append((score + bonus * n, list(seq)))
    return sorted(out, key=lambda x: -x[0])


def test_best_path_merges_repeats_and_drops_blanks():
    path = [3, 3, 0, 3, 4, 4, 0, 0, 5, 5]
    lp = F.one_hot(torch.tensor([path, path]), V).float().log_softmax(-1) * 10
    assert ctc_greedy(lp, torch.tensor([10, 5]), BLANK) == [[3, 3, 4, 5], [3, 3, 4]]


@pytest.mark.parametrize("seed", range(4))
def test_prefix_beam_search_finds_the_brute_force_best(seed):
    lp = random_frames(seed)
    want = brute_force(lp, None, 0.0, 0.0)
    hyps = ctc_prefix_beam_search(lp, lp.shape[0], beam=200, blank=BLANK, blank_skip=1.0, nbest=5)
    assert [h.tokens for h in hyps] == [seq for _, seq in want[:5]]
    assert [h.ctc for h in hyps] == pytest.approx([s for s, _ in want[:5]], abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_prefix_beam_search_with_an_lm_and_length_bonus_finds_the_brute_force_best(seed):
    torch.manual_seed(seed)
    lm = CharLM(CharLMConfig(embed_dim=4, hidden=8, layers=1), V, go_id=GO, eos_id=EOS).eval()
    lp = random_frames(seed + 10, T=5)
    want = brute_force(lp, lm, 0.8, 0.5)
    hyps = ctc_prefix_beam_search(lp, lp.shape[0], beam=300, blank=BLANK, lm=lm, lm_weight=0.8, length_bonus=0.5,
                                  go_id=GO, eos_id=EOS, blank_skip=1.0, nbest=3)
    assert [h.tokens for h in hyps] == [seq for _, seq in want[:3]]
    assert [h.score for h in hyps] == pytest.approx([s for s, _ in want[:3]], abs=1e-5)


class CTCModel(torch.nn.Module):
    """The encoder output is the CTC head's input; proj = identity, so enc holds the logits."""

    go_id, eos_id = GO, EOS

    def __init__(self) -> None:
        super().__init__()
        self.ctc = CTCHead(V, V, blank_id=BLANK)
        with torch.no_grad():
            self.ctc.proj.weight.copy_(torch.eye(V))
            self.ctc.proj.bias.zero_()


def test_decoder_ctc_option_decodes_a_batch_with_the_ctc_head():
    model = CTCModel()
    enc = torch.stack([random_frames(s).float() for s in range(3)])
    lengths = torch.tensor([6, 4, 6])
    greedy = decode(model, enc, lengths, DecodeOptions(decoder="ctc"))
    assert [h[0].tokens for h in greedy] == ctc_greedy(enc.log_softmax(-1), lengths, BLANK)
    beam = decode(model, enc, lengths, DecodeOptions(decoder="ctc", beam_size=50))
    for b in range(3):
        lp = enc[b, : lengths[b]].log_softmax(-1).double()
        assert beam[b][0].tokens == brute_force(lp, None, 0.0, 0.0)[0][1]
    with pytest.raises(SearchError, match="CTC head"):
        model.ctc = None
        decode(model, enc, lengths, DecodeOptions(decoder="ctc"))


def test_fallback_replaces_a_looping_or_guarded_hypothesis_by_the_ctc_path():
    model = CTCModel()
    path = [3, 4, 0, 5, 5, 0, 3, 0]  # best path 3 4 5 3
    enc = (F.one_hot(torch.tensor([path, path, path]), V).float() * 10)
    lengths = torch.tensor([8, 8, 8])
    looping = Hypothesis([3, 4, 5, 3, 4, 5, 3, 4, 5, 3, 4, 5], -1.0)  # planted loop, 3x CTC's length
    close = Hypothesis([3, 4, 5, 4], -1.0)  # one substitution: plausible, kept
    stopped = Hypothesis([3, 4], -1.0, guarded=True)  # the attention guard ended it
    out = _with_ctc_fallback(model, enc, lengths, [[looping], [close], [stopped]], margin=0.5)
    assert out[0][0].tokens == [3, 4, 5, 3] and out[0][0].fallback
    assert out[1][0] is close and not close.fallback
    assert out[2][0].tokens == [3, 4, 5, 3] and out[2][0].fallback and out[2][0].guarded
