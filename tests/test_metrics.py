"""Corpus error counts (asr.scoring) against independent references: edit distance and jiwer."""

from __future__ import annotations

import random

import jiwer

from asr.scoring import score_texts


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Plain dynamic-programming Levenshtein distance, the independent reference."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def test_counts_are_consistent_with_edit_distance_and_jiwer():
    rng = random.Random(0)
    words = ["a", "b", "c", "dé", "ü"]
    refs = [" ".join(rng.choices(words, k=rng.randint(0, 6))) for _ in range(200)]
    hyps = [" ".join(rng.choices(words, k=rng.randint(0, 6))) for _ in range(200)]
    out = score_texts(refs, hyps)
    errors = out["substitutions"] + out["deletions"] + out["insertions"]
    fewest = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
    # sclite's weighted alignment never finds fewer edits than the minimum, and rarely more
    assert fewest <= errors <= fewest * 1.05
    assert out["words"] == sum(len(r.split()) for r in refs) == jiwer.process_words(refs, refs).hits
    assert out["chars"] == jiwer.process_characters(refs, refs).hits


def test_known_values():
    out = score_texts(["the cat sat", "on the mat"], ["the cat sat", "on a mat mat"])
    assert (out["substitutions"], out["deletions"], out["insertions"], out["words"]) == (1, 0, 1, 6)
    assert abs(out["wer"] - 100 * 2 / 6) < 1e-3
    assert score_texts(["x"], ["x"])["wer"] == 0.0
