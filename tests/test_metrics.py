from __future__ import annotations

import random

from asr.metrics import char_errors, score, word_errors


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Plain dynamic-programming Levenshtein distance, the independent reference."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def test_counts_match_brute_force_edit_distance():
    rng = random.Random(0)
    words = ["a", "b", "c", "dé", "ü"]
    refs = [" ".join(rng.choices(words, k=rng.randint(0, 6))) for _ in range(200)]
    hyps = [" ".join(rng.choices(words, k=rng.randint(0, 6))) for _ in range(200)]
    w = word_errors(refs, hyps)
    assert w.substitutions + w.deletions + w.insertions == sum(
        edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps)
    )
    assert w.reference_length == sum(len(r.split()) for r in refs)
    c = char_errors(refs, hyps)
    assert c.substitutions + c.deletions + c.insertions == sum(edit_distance(list(r), list(h)) for r, h in zip(refs, hyps))


def test_known_values():
    out = score(["the cat sat", "on the mat"], ["the cat sat", "on a mat mat"])
    assert (out["substitutions"], out["deletions"], out["insertions"], out["words"]) == (1, 0, 1, 6)
    assert abs(out["wer"] - 100 * 2 / 6) < 1e-3
    assert score(["x"], ["x"])["wer"] == 0.0
