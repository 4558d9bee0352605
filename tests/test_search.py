"""Beam search: beam 1 == greedy, batched == one by one, exact on a hand-built scorer, length rules,
CTC and LM fusion, the attention guard."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from asr.models import AttentionConfig, LASConfig, ListenerConfig, SpellerConfig, build_las
from asr.models.lm import CharLM, CharLMConfig
from asr.search import DecodeOptions, SearchError, decode, greedy_search

pytestmark = pytest.mark.usefixtures("one_thread")
V = 9  # blank, [GO], [EOS], 6 characters


def small_las(seed: int, ctc_weight: float = 0.3, query: str = "current"):
    torch.manual_seed(seed)
    cfg = LASConfig(
        listener=ListenerConfig(input_dim=5, layers=2, hidden=8, reduce=(1, 2), projection=8),
        speller=SpellerConfig(embed_dim=6, hidden=8, query=query,
                              attention=AttentionConfig(dim=6, conv_channels=2, conv_kernel=5)),
        ctc_weight=ctc_weight)
    return build_las(cfg, V, input_dim=5).eval()


def encoded(model, seed: int, lengths=(30, 22, 17, 9)):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    feats = torch.randn(len(lengths), int(lengths.max()), 5, generator=g)
    with torch.no_grad():
        return model.encode_features(feats, lengths)


# ---- a hand-built scorer: log-probabilities from a fixed table indexed by the whole prefix ----

@dataclass(frozen=True)
class TableState:
    code: torch.Tensor  # (N,) number of the prefix fed so far
    depth: torch.Tensor  # (N,) tokens fed so far
    weights: torch.Tensor  # (N, T) fake attention weights

    def index_select(self, idx: torch.Tensor) -> TableState:
        return TableState(*(t.index_select(0, idx) for t in (self.code, self.depth, self.weights)))


class TableSpeller:
    """step() returns table[prefix] for the prefix of tokens fed so far (all of them, [GO] included)."""

    def __init__(self, table: torch.Tensor, vocab: int, peaks: list[int] | None = None) -> None:
        self.table, self.vocab, self.peaks = table, vocab, peaks
        self.calls = 0

    def init_state(self, enc, enc_lengths) -> TableState:
        zeros = torch.zeros(enc.shape[0], dtype=torch.long)
        return TableState(zeros, zeros, torch.zeros(enc.shape[0], enc.shape[1]))

    def step(self, state: TableState, tokens: torch.Tensor):
        self.calls += 1
        code = state.code * (self.vocab + 1) + tokens + 1
        weights = torch.zeros_like(state.weights)
        if self.peaks is not None:  # the attention peak of step i is at frame peaks[i]
            peak = torch.tensor([self.peaks[min(int(d), len(self.peaks) - 1)] for d in state.depth])
            weights[torch.arange(len(peak)), peak] = 1.0
        return self.table[code], TableState(code, state.depth + 1, weights)


class TableModel:
    """Vocabulary 0, 1, 2 = characters, 3 = [EOS] (also fed as [GO]); no CTC head."""

    vocab, eos_id, go_id, ctc = 4, 3, 3, None

    def __init__(self, table: torch.Tensor, peaks: list[int] | None = None) -> None:
        self.speller = TableSpeller(table, self.vocab, peaks)


def code_of(tokens: list[int], vocab: int = 4, go: int = 3) -> int:
    code = 0
    for t in [go, *tokens]:
        code = code * (vocab + 1) + t + 1
    return code


def random_table(seed: int, depth: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (1.5 * torch.randn(5 ** depth, 4, generator=g)).log_softmax(-1)


def brute_force(table: torch.Tensor, max_len: int, length_penalty: float = 0.0, normalize: bool = False):
    """Every hypothesis of at most max_len tokens with its rank score, best first."""
    out = []
    for n in range(max_len + 1):
        for seq in itertools.product(range(3), repeat=n):
            total = sum(float(table[code_of(list(seq[:j]))][seq[j]]) for j in range(n))
            total += float(table[code_of(list(seq))][3])  # [EOS], the only token allowed at max_len
            total += length_penalty * (n + 1)
            out.append((total / (n + 1) if normalize else total, list(seq)))
    return sorted(out, key=lambda x: -x[0])


def run_table(table, opts: DecodeOptions, **model_kw):
    model = TableModel(table, **model_kw)
    enc = torch.zeros(1, 10, 2)
    return decode(model, enc, torch.tensor([10]), opts)[0], model.speller.calls


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("length_penalty, normalize", [(0.0, False), (0.7, False), (0.0, True)])
def test_large_beam_finds_the_brute_force_best_and_nbest(seed: int, length_penalty: float, normalize: bool) -> None:
    table = random_table(seed)
    want = brute_force(table, 4, length_penalty, normalize)
    opts = DecodeOptions(beam_size=200, nbest=8, max_len=4, eos_threshold=0.0, length_penalty=length_penalty,
                         length_normalize=normalize)
    hyps, _ = run_table(table, opts)
    assert [h.tokens for h in hyps] == [seq for _, seq in want[:8]]
    assert [h.score for h in hyps] == pytest.approx([s for s, _ in want[:8]], abs=1e-5)


def test_small_beam_never_beats_the_brute_force_best() -> None:
    table = random_table(4)
    best = brute_force(table, 4)[0][0]
    for k in (1, 2, 3):
        hyps, _ = run_table(table, DecodeOptions(beam_size=k, max_len=4, eos_threshold=0.0))
        assert hyps[0].score <= best + 1e-6


def test_a_hypothesis_cut_at_the_maximum_length_pays_for_its_eos() -> None:
    """[0, 0] is the likeliest path but the model would not end it ([EOS] -30); at max_len 2 it may
    only end, so [1] + [EOS] (-2.5) wins. Greedy, which cannot look back, keeps [0, 0]."""
    table = torch.full((5 ** 5, 4), -10.0)
    table[code_of([]), :2] = torch.tensor([-0.1, -2.0])
    table[code_of([0]), 0] = -0.1
    table[code_of([0, 0]), 3] = -30.0
    table[code_of([1]), 3] = -0.5
    hyps, _ = run_table(table, DecodeOptions(beam_size=2, max_len=2, eos_threshold=0.0))
    assert hyps[0].tokens == [1] and hyps[0].score == pytest.approx(-2.5)
    assert greedy_search(TableModel(table), torch.zeros(1, 10, 2), torch.tensor([10]), max_len=2) == [[0, 0]]


def ranking_table() -> torch.Tensor:
    """[] + EOS: -1.0 in total; [0, 0, 0] + EOS: -1.3 (-0.4 per token, EOS -0.1); everything else -10."""
    table = torch.full((5 ** 5, 4), -10.0)
    table[code_of([]), 3] = -1.0
    for n in range(3):
        table[code_of([0] * n), 0] = -0.4
    table[code_of([0, 0, 0]), 3] = -0.1
    return table


@pytest.mark.parametrize("opts, tokens", [
    (dict(), []),                                   # raw score: -1.0 beats -1.3
    (dict(length_normalize=True), [0, 0, 0]),       # per token: -1.0 / 1 < -1.3 / 4
    (dict(length_penalty=0.2), [0, 0, 0]),          # -1.0 + 0.2 < -1.3 + 4 * 0.2
    (dict(length_penalty=-0.2), []),
])
def test_length_penalty_and_normalisation_change_the_ranking(opts: dict, tokens: list[int]) -> None:
    hyps, _ = run_table(ranking_table(), DecodeOptions(beam_size=4, nbest=2, max_len=4, eos_threshold=0.0, **opts))
    assert hyps[0].tokens == tokens
    assert hyps[0].scores["length"] == pytest.approx(opts.get("length_penalty", 0.0) * (len(tokens) + 1))


def test_end_detection_stops_as_soon_as_no_live_hypothesis_can_win() -> None:
    table = torch.full((5 ** 5, 4), -5.0)
    table[:, 3] = -0.01  # [EOS] is by far the best everywhere
    hyps, calls = run_table(table, DecodeOptions(beam_size=3, nbest=3, max_len=4, eos_threshold=0.0))
    # step 1: [] ends (and 2 live); step 2: the 2 live ones end, 3 finished >= every live bound.
    assert calls == 2 and hyps[0].tokens == [] and len(hyps) == 3


def test_eos_threshold_and_min_length() -> None:
    table = torch.full((5 ** 5, 4), -3.0)
    table[:, 0] = -0.5
    table[:, 3] = -0.6  # [EOS] second best: refused by a threshold of 1.5? -0.6 > 1.5 * -0.5 -> allowed
    hyps, _ = run_table(table, DecodeOptions(beam_size=2, max_len=4))
    assert hyps[0].tokens == []
    table[:, 3] = -0.8  # -0.8 < -0.75: refused at every step, so hypotheses run to the maximum length
    hyps, _ = run_table(table, DecodeOptions(beam_size=2, max_len=4))
    assert hyps[0].tokens == [0, 0, 0, 0]
    hyps, _ = run_table(table, DecodeOptions(beam_size=2, max_len=4, eos_threshold=0.0))
    assert hyps[0].tokens == []
    hyps, _ = run_table(table, DecodeOptions(beam_size=2, max_len=4, eos_threshold=0.0, min_len_ratio=0.2))
    assert hyps[0].tokens == [0, 0]  # floor(0.2 * 10 frames) = 2 tokens at least


def test_attention_guard_stops_stalled_and_backward_attention() -> None:
    table = torch.full((5 ** 6, 4), -3.0)
    table[:, 1] = -0.1  # always continue with token 1
    opts = DecodeOptions(max_len=5, eos_threshold=0.0)
    assert run_table(table, opts, peaks=[0] * 9)[0][0].tokens == [1] * 5  # no guard: runs to max length
    guard = DecodeOptions(max_len=5, eos_threshold=0.0, attention_guard=True, guard_max_stall=2)
    assert run_table(table, guard, peaks=[0] * 9)[0][0].tokens == [1] * 3  # ends once stalled for > 2 steps
    assert run_table(table, guard, peaks=[0, 4, 8, 1, 2, 3, 9])[0][0].tokens == [1] * 3  # jumped back by 7
    assert run_table(table, guard, peaks=[0, 4, 8, 6, 9, 9, 9])[0][0].tokens == [1] * 5  # back by 2 is allowed


# ---- a small random LAS model ----

@pytest.mark.parametrize("seed", range(6))
def test_beam_size_one_is_greedy(seed: int) -> None:
    model = small_las(seed)
    with torch.no_grad():
        model.speller.output.bias[model.eos_id] += [-1.0, 0.0, 0.5, 1.0, 1.5, 2.0][seed]  # varied output lengths
    enc, lengths = encoded(model, seed)
    want = greedy_search(model, enc, lengths)
    for opts in (DecodeOptions(), DecodeOptions(eos_threshold=0.0), DecodeOptions(max_len_ratio=0.3)):
        hyps = decode(model, enc, lengths, opts)
        assert [h[0].tokens for h in hyps] == greedy_search(model, enc, lengths, max_len_ratio=opts.max_len_ratio)
    assert [h[0].tokens for h in decode(model, enc, lengths)] == want


@pytest.mark.parametrize("query", ["current", "previous"])
def test_batched_equals_one_utterance_at_a_time(query: str) -> None:
    model = small_las(1, query=query)
    lm = CharLM(CharLMConfig(embed_dim=4, hidden=6, layers=1, dropout=0.0), V).eval()
    enc, lengths = encoded(model, 1)
    for opts in (DecodeOptions(beam_size=4, nbest=3),
                 DecodeOptions(beam_size=5, nbest=2, ctc_weight=0.4, lm_weight=0.3, length_penalty=0.5),
                 DecodeOptions(beam_size=3, ctc_weight=0.3, length_normalize=True, max_len_ratio=0.5)):
        batched = decode(model, enc, lengths, opts, lm=lm)
        for i, n in enumerate(lengths.tolist()):
            alone = decode(model, enc[i : i + 1, :n], lengths[i : i + 1], opts, lm=lm)[0]
            assert [h.tokens for h in alone] == [h.tokens for h in batched[i]]
            for a, b in zip(alone, batched[i]):
                assert a.score == pytest.approx(b.score, abs=1e-4)
                assert a.scores == pytest.approx(b.scores, abs=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_attending_once_per_parent_changes_no_hypothesis(seed: int, monkeypatch) -> None:
    """With query "previous", siblings (beams extended from one parent) share the step's attention;
    computing it for every beam instead gives the same N-best lists and scores."""
    import asr.models.speller as speller

    model = small_las(seed, query="previous")
    enc, lengths = encoded(model, seed)
    calls = []
    real = speller.sibling_rows

    def counting(*args):
        calls.append(real(*args))
        return calls[-1]

    for opts in (DecodeOptions(beam_size=6, nbest=4), DecodeOptions(beam_size=4, nbest=2, ctc_weight=0.4)):
        calls.clear()
        monkeypatch.setattr(speller, "sibling_rows", counting)
        shared = decode(model, enc, lengths, opts)
        assert sum(rows is not None for rows in calls) >= 2  # the first step and at least one more shared
        monkeypatch.setattr(speller, "sibling_rows", lambda *args: None)
        alone = decode(model, enc, lengths, opts)
        for a, b in zip(alone, shared):
            assert [h.tokens for h in a] == [h.tokens for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


def test_max_length_holds_when_eos_is_suppressed() -> None:
    model = small_las(2)
    with torch.no_grad():
        model.speller.output.bias[model.eos_id] = -1.0e4
    enc, lengths = encoded(model, 2)
    for ratio, cap in ((1.0, None), (0.4, None), (1.0, 5)):
        opts = DecodeOptions(beam_size=3, nbest=3, max_len_ratio=ratio, max_len=cap, ctc_weight=0.3)
        for hyps, n in zip(decode(model, enc, lengths, opts), lengths.tolist()):
            limit = max(1, int(ratio * n)) if cap is None else min(cap, max(1, int(ratio * n)))
            assert [len(h.tokens) for h in hyps] == [limit] * 3


def test_scores_are_the_documented_sums() -> None:
    model = small_las(3)
    enc, lengths = encoded(model, 3)
    lm = CharLM(CharLMConfig(embed_dim=4, hidden=6, layers=1, dropout=0.0), V).eval()
    opts = DecodeOptions(beam_size=4, nbest=4, ctc_weight=0.3, lm_weight=0.2, length_penalty=0.1, max_len_ratio=0.5)
    ctc_lp = model.ctc.log_probs(enc).detach()
    at_limit = 0
    for i, hyps in enumerate(decode(model, enc, lengths, opts, lm=lm)):
        for h in hyps:
            at_limit += len(h.tokens) == max(1, int(0.5 * lengths[i]))
            total = 0.7 * h.scores["att"] + 0.3 * h.scores["ctc"] + 0.2 * h.scores["lm"] + h.scores["length"]
            assert h.score == pytest.approx(total, abs=1e-4)
            assert len(h.tokens) <= max(1, int(0.5 * lengths[i]))
            # Every hypothesis ends with [EOS] (the only token at the maximum length), so the CTC
            # part is the whole sequence's log-probability.
            want = -F.ctc_loss(ctc_lp[i : i + 1, : lengths[i]].transpose(0, 1), torch.tensor([h.tokens]),
                               lengths[i : i + 1], torch.tensor([len(h.tokens)]), reduction="sum")
            assert h.scores["ctc"] == pytest.approx(float(want), abs=1e-3)
            # The attention part is the teacher-forced log-probability of the tokens (+ [EOS]).
            tokens_in = torch.tensor([[model.go_id, *h.tokens]])
            with torch.no_grad():
                lp = model.speller(enc[i : i + 1, : lengths[i]], lengths[i : i + 1], tokens_in)[0].log_softmax(-1)[0]
            att = sum(float(lp[j, t]) for j, t in enumerate([*h.tokens, model.eos_id]))
            assert h.scores["att"] == pytest.approx(att, abs=1e-3)
    assert at_limit > 0  # the sums hold for hypotheses ended at the maximum length too


def test_lm_fusion_changes_the_result() -> None:
    model = small_las(4, ctc_weight=0.0)
    enc, lengths = encoded(model, 4)
    lm = CharLM(CharLMConfig(embed_dim=4, hidden=6, layers=1, dropout=0.0), V).eval()
    with torch.no_grad():  # an LM that only believes in character 7
        lm.output.weight.zero_()
        lm.output.bias.fill_(-20.0)
        lm.output.bias[7] = 20.0
    opts = DecodeOptions(beam_size=3, max_len_ratio=0.5)
    plain = [h[0].tokens for h in decode(model, enc, lengths, opts)]
    fused = [h[0].tokens for h in decode(model, enc, lengths, DecodeOptions(beam_size=3, max_len_ratio=0.5,
                                                                             lm_weight=1.0), lm=lm)]
    assert fused != plain
    assert all(t == [7] * max(1, int(0.5 * n)) for t, n in zip(fused, lengths.tolist()))


def test_bad_options_are_reported() -> None:
    model = small_las(0, ctc_weight=0.0)
    enc, lengths = encoded(model, 0)
    with pytest.raises(SearchError, match="CTC head"):
        decode(model, enc, lengths, DecodeOptions(ctc_weight=0.3))
    with pytest.raises(SearchError, match="language model"):
        decode(model, enc, lengths, DecodeOptions(lm_weight=0.3))
    with pytest.raises(SearchError):
        DecodeOptions(beam_size=2, nbest=3)
    wrong = CharLM(CharLMConfig(embed_dim=4, hidden=6, layers=1), V + 1).eval()
    with pytest.raises(SearchError, match="classes"):
        decode(model, enc, lengths, DecodeOptions(lm_weight=0.3), lm=wrong)
