"""Check a manifest before training: every utterance, every fault, one report.

An utterance is the audio from `offset` to `offset + duration` of its file.
The duration check decodes the audio: it is a fault when the file holds less
than that (beyond the tolerance), or, for an utterance that is a whole file
(offset 0 and no other utterance of the manifest uses the file), when the file
is longer than the manifest says.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from asr.audio import AudioError, audio_info, load_audio, wav_shortfall
from asr.data.manifest import Utterance, scan_manifest
from asr.data.samples import MIN_AUDIO_SECONDS
from asr.files import file_problem
from asr.text import CharTokenizer, OOVError, TextNormalizer

# fault kind -> what it means, in report order
FAULT_KINDS: dict[str, str] = {
    "bad_line": "malformed manifest lines (or an empty manifest)",
    "duplicate_id": "ids used by more than one line",
    "missing_file": "audio file does not exist or is not a regular file",
    "unreadable_audio": "audio cannot be decoded",
    "truncated_audio": "audio file holds less than its header declares",
    "too_short": f"audio shorter than {MIN_AUDIO_SECONDS:g} s (training skips it)",
    "empty_text": "transcript is empty after normalisation",
    "duration_mismatch": "manifest duration differs from the audio",
    "oov": "characters outside the vocabulary",
}
DEFAULT_TOLERANCE = 0.05  # seconds the manifest duration may differ from the audio


@dataclass(frozen=True)
class Fault:
    """One problem found in a manifest."""

    kind: str  # a key of FAULT_KINDS
    id: str  # utterance id ("file:line" for a bad line)
    detail: str  # what is wrong, for people


@dataclass
class ValidationReport:
    """All faults of one manifest."""

    manifest: str  # the manifest's path
    utterances: int  # well-formed lines checked
    faults: list[Fault] = field(default_factory=list)  # in manifest order within each kind

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.faults

    def by_kind(self) -> dict[str, list[Fault]]:
        """Faults grouped by kind, in FAULT_KINDS order; kinds without faults are left out."""
        return {kind: [f for f in self.faults if f.kind == kind] for kind in FAULT_KINDS if any(f.kind == kind for f in self.faults)}

    def to_dict(self) -> dict:
        """Plain dict for `--json`: counts and every fault."""
        groups = self.by_kind()
        return {
            "manifest": self.manifest,
            "utterances": self.utterances,
            "ok": self.ok,
            "counts": {kind: len(faults) for kind, faults in groups.items()},
            "faults": {kind: [{"id": f.id, "detail": f.detail} for f in faults] for kind, faults in groups.items()},
        }

    def format_text(self, max_ids: int = 10) -> str:
        """A report for people: one block per fault kind with its count and first `max_ids` ids."""
        lines = [f"{self.manifest}: {self.utterances} utterances, {len(self.faults)} faults"]
        for kind, faults in self.by_kind().items():
            lines.append(f"  {kind}: {len(faults)} ({FAULT_KINDS[kind]})")
            lines.extend(f"    {f.id}: {f.detail}" for f in faults[:max_ids])
            if len(faults) > max_ids:
                lines.append(f"    ... {len(faults) - max_ids} more (see --json)")
        return "\n".join(lines)


def check_text(utt: Utterance, tokenizer: CharTokenizer | None) -> list[Fault]:
    """Empty (after normalisation: the tokenizer's, else the default) or out-of-vocabulary transcripts."""
    if not utt.text.strip():
        return [Fault("empty_text", utt.id, "empty transcript")]
    normalized = tokenizer.normalize(utt.text) if tokenizer is not None else TextNormalizer().normalize(utt.text)
    if not normalized:
        return [Fault("empty_text", utt.id, f"transcript {utt.text[:40]!r} is empty after normalisation")]
    if tokenizer is not None:
        try:
            tokenizer.encode(utt.text, utt.id)
        except OOVError as err:
            return [Fault("oov", utt.id, "not in the vocabulary: " + " ".join(repr(c) for c in err.chars))]
    return []


def check_audio(utt: Utterance, whole_file: bool, tolerance: float) -> list[Fault]:
    """Missing file, audio that does not decode, is truncated or too short, or a duration that disagrees."""
    problem = file_problem(utt.audio, "file")
    if problem is not None:
        return [Fault("missing_file", utt.id, f"{utt.audio}: {problem}")]
    try:
        info = audio_info(utt.audio)
        # decode at the file's own rate: only decodability and length matter here
        length = None if whole_file else utt.duration + 2 * tolerance
        wave = load_audio(utt.audio, info.sample_rate, offset=utt.offset, duration=length)
    except Exception as err:  # any decoder failure is a fault to report, not a crash
        return [Fault("unreadable_audio", utt.id, str(err) if isinstance(err, AudioError) else f"{utt.audio}: {err!r}")]
    seconds = wave.shape[-1] / info.sample_rate
    short = wav_shortfall(utt.audio)
    if short is not None:
        return [Fault("truncated_audio", utt.id, f"{utt.audio}: the WAV header declares {short[0]} bytes of "
                                                 f"samples, the file holds {short[1]}")]
    if seconds < MIN_AUDIO_SECONDS:
        return [Fault("too_short", utt.id, f"{utt.audio}: {wave.shape[-1]} samples ({seconds * 1000:.1f} ms)")]
    if seconds < utt.duration - tolerance:
        where = f" after offset {utt.offset:g} s" if utt.offset else ""
        return [Fault("duration_mismatch", utt.id, f"manifest says {utt.duration:g} s, audio has {seconds:.3f} s{where}")]
    if whole_file and seconds > utt.duration + tolerance:
        return [Fault("duration_mismatch", utt.id, f"manifest says {utt.duration:g} s, file lasts {seconds:.3f} s")]
    return []


def duplicate_faults(utterances: Iterable[Utterance]) -> list[Fault]:
    """One fault per id that more than one line uses."""
    counts = Counter(u.id for u in utterances)
    return [Fault("duplicate_id", uid, f"used by {n} lines") for uid, n in counts.items() if n > 1]


def check_utterance(utt: Utterance, whole_file: bool, tokenizer: CharTokenizer | None, tolerance: float) -> list[Fault]:
    """Every fault of one utterance (text and audio)."""
    return check_text(utt, tokenizer) + check_audio(utt, whole_file, tolerance)


def validate_manifest(
    path: str | os.PathLike,
    *,
    tokenizer: CharTokenizer | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    jobs: int | None = None,
    progress: bool = True,
) -> ValidationReport:
    """Check every line and utterance of a manifest; decoding runs in `jobs` processes (default: all cores)."""
    utterances, problems = scan_manifest(path)
    report = ValidationReport(str(path), len(utterances))
    report.faults += [Fault("bad_line", where, problem) for where, problem in problems]
    report.faults += duplicate_faults(utterances)
    users = Counter(u.audio for u in utterances)
    whole = [u.offset == 0 and users[u.audio] == 1 for u in utterances]
    check = functools.partial(check_utterance, tokenizer=tokenizer, tolerance=tolerance)
    jobs = jobs or os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        if jobs > 1 and len(utterances) > 1:  # processes: decoding many short files is bound by Python, not C
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=jobs))
            results = pool.map(check, utterances, whole, chunksize=max(1, min(64, len(utterances) // (8 * jobs))))
        else:
            results = map(check, utterances, whole)
        bar = stack.enter_context(tqdm(total=len(utterances), desc=f"validate {Path(path).name}", unit="utt",
                                       disable=not progress))
        for faults in results:
            report.faults += faults
            bar.update(1)
    return report
