"""Error counts that agree with NIST sclite, for words and characters.

sclite does not count the minimum number of edits (jiwer, Kaldi's compute-wer
do): it aligns with costs correct 0, substitution 4, insertion 3, deletion 3
(`wwd_WORD` in sctk's word.c) and breaks ties towards a substitution, then a
deletion, then an insertion (`calculate_internal_cells` in net_dp.c). The two
differ on a few percent of utterances, in how errors split into S/D/I and, more
rarely, in their total: sclite aligns "a b c d e" with "d e x y z" as 3 D + 3 I
(cost 18) where the minimum edit count is 5 S (cost 20). `align` runs the same
dynamic programme with the same tie-breaking, so `asr score` and `asr evaluate`
report exactly sclite's counts (`sctk sclite -s`, case-sensitive; sclite's
markup for optional deletions, fragments and alternations is not interpreted).

Characters (CER) are aligned with the same costs, spaces included as in jiwer's
CER; `sclite -c` would drop the spaces ("ab cd" vs "abcd": 0 errors there, 1 here).

One difference is deliberate: when the references hold no words at all, sclite
prints an error rate of 0.0 whatever was inserted; here the rate is then 100%
per inserted word, so such a corpus never reads as perfect.

Rows of the programme are vectorised: within a row, the insertion chain
row[b] = min(candidate[b], row[b - 1] + 3) is a running minimum of
candidate[k] - 3k, so a 4000 x 4000 alignment takes well under a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

SUBSTITUTION_COST = 4  # sclite's wwd_WORD: substitution
INSERTION_COST = 3  # ... insertion of a hypothesis word
DELETION_COST = 3  # ... deletion of a reference word
_SUB, _DEL, _INS = 0, 1, 2  # back-pointer codes (_SUB covers correct words too)

Op = Literal["C", "S", "D", "I"]  # correct, substitution, deletion, insertion


@dataclass(frozen=True)
class ErrorCounts:
    """Alignment counts of hypotheses against references (words or characters)."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def reference_length(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def rate(self) -> float:
        """Error rate in percent; insertions against an empty reference count as 100% each."""
        errors = self.substitutions + self.deletions + self.insertions
        if self.reference_length == 0:
            return 0.0 if errors == 0 else 100.0 * errors
        return 100.0 * errors / self.reference_length



@dataclass(frozen=True)
class Edit:
    """One step of an alignment: a reference token, a hypothesis token, or both."""

    op: Op  # "C" correct, "S" substitution, "D" deletion (ref only), "I" insertion (hyp only)
    ref: str | None  # the reference token (None for an insertion)
    hyp: str | None  # the hypothesis token (None for a deletion)


@dataclass(frozen=True)
class UtteranceScore:
    """Word and character alignment counts of one hypothesis against its reference."""

    words: ErrorCounts  # sclite-aligned word counts
    chars: ErrorCounts  # the same alignment over characters, spaces included
    alignment: list[Edit]  # the word alignment

    @property
    def errors(self) -> int:
        """Word errors S + D + I."""
        return self.words.substitutions + self.words.deletions + self.words.insertions


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[Edit]:
    """sclite's alignment of two token sequences (words, or characters): see the module docstring."""
    n, m = len(ref), len(hyp)
    ids: dict[str, int] = {}
    r = np.array([ids.setdefault(t, len(ids)) for t in ref], dtype=np.int64)
    h = np.array([ids.setdefault(t, len(ids)) for t in hyp], dtype=np.int64)
    back = np.empty((n + 1, m + 1), dtype=np.int8)  # how each cell was reached
    back[0, :] = _INS
    back[:, 0] = _DEL
    ramp = np.arange(m + 1, dtype=np.int64) * INSERTION_COST
    prev = ramp.copy()  # costs of row a - 1 (row 0: insertions only)
    cand = np.empty(m + 1, dtype=np.int64)
    for a in range(1, n + 1):
        sub = prev[:-1] + np.where(h == r[a - 1], 0, SUBSTITUTION_COST)  # (m,) diagonal moves
        dele = prev[1:] + DELETION_COST  # (m,) vertical moves
        cand[0] = prev[0] + DELETION_COST
        np.minimum(sub, dele, out=cand[1:])
        row = np.minimum.accumulate(cand - ramp) + ramp  # adds the horizontal (insertion) moves
        ins = row[:-1] + INSERTION_COST
        take_sub = (sub <= dele) & (sub <= ins)
        take_del = ~take_sub & (dele < ins)
        back[a, 1:] = np.where(take_sub, _SUB, np.where(take_del, _DEL, _INS))
        prev = row
    edits: list[Edit] = []
    a, b = n, m
    while a > 0 or b > 0:
        code = back[a, b]
        if code == _SUB:
            a, b = a - 1, b - 1
            edits.append(Edit("C" if ref[a] == hyp[b] else "S", ref[a], hyp[b]))
        elif code == _DEL:
            a -= 1
            edits.append(Edit("D", ref[a], None))
        else:
            b -= 1
            edits.append(Edit("I", None, hyp[b]))
    edits.reverse()
    return edits


def count(edits: Iterable[Edit]) -> ErrorCounts:
    """Substitution, deletion, insertion and hit counts of an alignment."""
    tally = {"C": 0, "S": 0, "D": 0, "I": 0}
    for edit in edits:
        tally[edit.op] += 1
    return ErrorCounts(substitutions=tally["S"], deletions=tally["D"], insertions=tally["I"], hits=tally["C"])


def score_utterance(ref: str, hyp: str) -> UtteranceScore:
    """Words split on whitespace; characters of the words joined by single spaces."""
    ref_words, hyp_words = ref.split(), hyp.split()
    alignment = align(ref_words, hyp_words)
    chars = count(align(list(" ".join(ref_words)), list(" ".join(hyp_words))))
    return UtteranceScore(words=count(alignment), chars=chars, alignment=alignment)


def summarize(scores: Iterable[UtteranceScore]) -> dict[str, float | int]:
    """Corpus totals: wer/cer in percent, word S/D/I/hits, words, chars, sentence errors, utterances."""
    totals = np.zeros(8, dtype=np.int64)
    utterances = sentence_errors = 0
    for s in scores:
        w, c = s.words, s.chars
        totals += (w.substitutions, w.deletions, w.insertions, w.hits,
                   c.substitutions, c.deletions, c.insertions, c.hits)
        utterances += 1
        sentence_errors += s.errors > 0
    words = ErrorCounts(*(int(v) for v in totals[:4]))
    chars = ErrorCounts(*(int(v) for v in totals[4:]))
    return {
        "wer": round(words.rate, 4),
        "cer": round(chars.rate, 4),
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "hits": words.hits,
        "words": words.reference_length,
        "chars": chars.reference_length,
        "char_errors": chars.substitutions + chars.deletions + chars.insertions,
        "sentence_errors": sentence_errors,
        "utterances": utterances,
    }


def score_texts(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float | int]:
    """`summarize` of reference/hypothesis pairs, e.g. score_texts(["a b"], ["a c"])["wer"] == 50.0."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    return summarize(score_utterance(r, h) for r, h in zip(refs, hyps))
