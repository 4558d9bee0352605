"""Word and character error rates through jiwer, with the error breakdown."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import jiwer


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


def word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    """Word-level alignment counts over a corpus (jiwer's Levenshtein alignment)."""
    return _counts(references, hypotheses, jiwer.process_words)


def char_errors(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    """Character-level counts; spaces count as characters, as in jiwer's CER."""
    return _counts(references, hypotheses, jiwer.process_characters)


def score(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float | int]:
    """The summary every scoring command prints: wer/cer (percent), counts, words, utterances."""
    words = word_errors(references, hypotheses)
    chars = char_errors(references, hypotheses)
    return {
        "wer": round(words.rate, 4),
        "cer": round(chars.rate, 4),
        **asdict(words),
        "words": words.reference_length,
        "chars": chars.reference_length,
        "utterances": len(references),
    }


def _counts(references: Sequence[str], hypotheses: Sequence[str], process) -> ErrorCounts:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        return ErrorCounts(0, 0, 0, 0)
    out = process(list(references), list(hypotheses))
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits)
