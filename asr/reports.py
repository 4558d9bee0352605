"""Transcript files and scoring reports.

Two transcript formats, one utterance per line:

    trn    the cat sat (spk1-utt1)      sclite's transcript format: text, then the id in parentheses
    kaldi  utt1 the cat sat             Kaldi's `text` file: id, then text

A report directory (`asr evaluate --report DIR`) holds

    results.jsonl   one JSON object per utterance: id, speaker, ref, hyp, counts, word alignment
    ref.trn         references in sclite format, so `sctk sclite -r ref.trn trn -h hyp.trn trn -i rm -s`
    hyp.trn         ... reproduces the word counts of the summary
    summary.json    the corpus summary printed by `--json`
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from asr.errors import AsrError
from asr.files import file_problem, output_problem
from asr.scoring import UtteranceScore, summarize

Format = Literal["auto", "trn", "kaldi"]
TRN_COMMENT = ";;"  # sclite's comment lines


class TranscriptError(AsrError):
    """A transcript file that cannot be read, or references and hypotheses that do not match."""


@dataclass(frozen=True)
class UtteranceResult:
    """One scored utterance, as a line of results.jsonl."""

    id: str  # utterance id
    ref: str  # normalised reference
    hyp: str  # hypothesis
    score: UtteranceScore  # word/char counts and word alignment
    speaker: str | None = None  # speaker id, if known
    duration: float | None = None  # seconds of audio (evaluate only)
    fallback: bool = False  # the hypothesis is the CTC head's, the attention one being implausible

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready record; the alignment is a list of [op, ref word, hyp word]."""
        words, chars = self.score.words, self.score.chars
        return {
            "id": self.id, "speaker": self.speaker, "duration": self.duration, "ref": self.ref, "hyp": self.hyp,
            **asdict(words), "words": words.reference_length, "wer": round(words.rate, 4),
            "chars": chars.reference_length, "char_errors": chars.substitutions + chars.deletions + chars.insertions,
            "cer": round(chars.rate, 4),
            "alignment": [[e.op, e.ref, e.hyp] for e in self.score.alignment],
            "ctc_fallback": self.fallback,
        }


def corpus_summary(results: Sequence[UtteranceResult], *, missing: int = 0, audio_seconds: float | None = None,
                   decode_seconds: float | None = None) -> dict[str, Any]:
    """The object `asr evaluate --json` and `asr score --json` print (timing fields None when unknown).

    wer/cer are percent; `missing` counts utterances scored without a hypothesis (score) or
    not decoded at all (evaluate: unreadable audio); rtf = decode_seconds / audio_seconds.
    """
    rtf = decode_seconds / audio_seconds if decode_seconds is not None and audio_seconds else None
    return {
        **summarize(r.score for r in results),
        "missing": missing,
        "rtf": None if rtf is None else round(rtf, 5),
        "audio_seconds": None if audio_seconds is None else round(audio_seconds, 3),
        "decode_seconds": None if decode_seconds is None else round(decode_seconds, 3),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """One human-readable line, in the spirit of Kaldi's compute-wer."""
    errors = summary["substitutions"] + summary["deletions"] + summary["insertions"]
    line = (f"%WER {summary['wer']:.2f} [ {errors} / {summary['words']}, {summary['insertions']} ins, "
            f"{summary['deletions']} del, {summary['substitutions']} sub ]  %CER {summary['cer']:.2f} "
            f"[ {summary['char_errors']} / {summary['chars']} ]  {summary['utterances']} utterances")
    if summary.get("missing"):
        line += f"  {summary['missing']} missing"
    if summary.get("rtf") is not None:
        line += f"  RTF {summary['rtf']:.4f}"
    return line


def trn_id(utt_id: str, speaker: str | None = None) -> str:
    """The id written in a .trn line: `speaker-utt` when the speaker is known (sclite's `-i rm`)."""
    return f"{speaker}-{utt_id}" if speaker else utt_id


def split_trn(line: str) -> tuple[str, str] | None:
    """(text, id) of a trn line `text (id)`, or None when the line does not end with a parenthesised group.

    The id is the last parenthesised group, parentheses inside it balanced, so that ids such as
    `spk(1)-u2` read back as written: split_trn("a (b) (spk(1)-u2)") == ("a (b)", "spk(1)-u2").
    """
    body = line.rstrip()
    if not body.endswith(")"):
        return None
    depth = 0
    for i in range(len(body) - 1, -1, -1):
        if body[i] == ")":
            depth += 1
        elif body[i] == "(":
            depth -= 1
            if depth == 0:
                return body[:i].rstrip(), body[i + 1 : -1].strip()
    return None


def detect_format(lines: Iterable[str]) -> Literal["trn", "kaldi"]:
    """"trn" when most non-blank, non-comment lines end with "(id)", else "kaldi".

    Most, not all: a .trn file with a malformed line is then reported at that line, instead of being
    read as Kaldi text whose ids match nothing (which would blame the other file).
    """
    content = [line for line in lines if line.strip() and not line.startswith(TRN_COMMENT)]
    trn = sum(split_trn(line) is not None for line in content)
    return "trn" if content and 2 * trn >= len(content) else "kaldi"


def read_transcripts(path: str | os.PathLike, format: Format = "auto") -> dict[str, str]:
    """id -> text of a .trn or Kaldi-style file, in file order; whitespace runs become one space."""
    path = Path(path)
    problem = file_problem(path, "transcript file")
    if problem is not None:
        raise TranscriptError(f"{path}: {problem}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TranscriptError(f"{path}: cannot read transcripts ({err})") from None
    detected = format == "auto"
    if detected:
        format = detect_format(lines)
    out: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or (format == "trn" and line.startswith(TRN_COMMENT)):
            continue
        if format == "trn":
            parts = split_trn(line)
            if parts is None:
                hint = " (most lines are; --format kaldi reads 'id text' lines)" if detected else ""
                raise TranscriptError(f"{path}:{number}: not a trn line 'text (id)'{hint}: {line[:80]!r}")
            text, uid = parts
        elif format == "kaldi":
            parts = line.split(maxsplit=1)
            uid, text = parts[0], parts[1] if len(parts) > 1 else ""
        else:
            raise ValueError(f"unknown transcript format {format!r}")
        if not uid:
            raise TranscriptError(f"{path}:{number}: empty utterance id")
        if uid in out:
            raise TranscriptError(f"{path}:{number}: utterance id {uid!r} appears twice")
        out[uid] = " ".join(text.split())
    return out


def pair_transcripts(refs: dict[str, str], hyps: dict[str, str], *, hyp_name: str = "hypotheses",
                     ref_name: str | None = None) -> tuple[list[str], list[str], list[str], list[str]]:
    """(ids, refs, hyps, missing ids) in reference order; a missing hypothesis counts as empty.

    A hypothesis id that is not among the references is an error naming it.
    """
    extra = [uid for uid in hyps if uid not in refs]
    if extra:
        shown = ", ".join(repr(u) for u in extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        where = f" (read from {ref_name})" if ref_name else ""
        raise TranscriptError(f"{hyp_name}: {len(extra)} utterance id(s) not in the references: {shown}{where}")
    ids = list(refs)
    missing = [uid for uid in ids if uid not in hyps]
    return ids, [refs[u] for u in ids], [hyps.get(u, "") for u in ids], missing


def write_trn(path: str | os.PathLike, items: Iterable[tuple[str, str]]) -> None:
    """Write (trn id, text) pairs as sclite `text (id)` lines; TranscriptError for an id that would not read back."""
    _write_lines(path, (_trn_line(path, uid, text) for uid, text in items))


def trn_id_problem(uid: str) -> str | None:
    """Why `uid` would not read back from a trn line (e.g. to check ids before a long decode); None if it would."""
    parts = split_trn(f"x ({uid})")
    if parts is None or parts[1] != uid:
        return f"utterance id {uid!r} cannot be written as a trn id (unbalanced parentheses or spaces at its ends)"
    return None


def _trn_line(path: str | os.PathLike, uid: str, text: str) -> str:
    """`text (uid)`; TranscriptError naming `path` when the id would not read back."""
    problem = trn_id_problem(uid)
    if problem is not None:
        raise TranscriptError(f"{path}: {problem}")
    return f"{text} ({uid})"


def write_kaldi(path: str | os.PathLike, items: Iterable[tuple[str, str]]) -> None:
    """Write (id, text) pairs as Kaldi `id text` lines."""
    _write_lines(path, (f"{uid} {text}".rstrip() for uid, text in items))


def write_report(directory: str | os.PathLike, results: Sequence[UtteranceResult], summary: dict[str, Any]) -> Path:
    """results.jsonl, ref.trn, hyp.trn and summary.json in `directory` (created), utterances sorted by id."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ordered = sorted(results, key=lambda r: r.id)
    _write_lines(directory / "results.jsonl", (json.dumps(r.to_dict(), ensure_ascii=False) for r in ordered))
    write_trn(directory / "ref.trn", ((trn_id(r.id, r.speaker), r.ref) for r in ordered))
    write_trn(directory / "hyp.trn", ((trn_id(r.id, r.speaker), r.hyp) for r in ordered))
    _write_lines(directory / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False).splitlines())
    return directory


def _write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """UTF-8, one line each, written to a temporary file then renamed into place."""
    path = Path(path)
    problem = output_problem(path)
    if problem is not None:
        raise TranscriptError(f"{path}: {problem}; not written over")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                if len((line + "x").splitlines()) > 1:
                    raise TranscriptError(f"{path}: a line would hold a line break: {line[:80]!r}")
                f.write(line + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
