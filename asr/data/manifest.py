"""JSON Lines manifests: one utterance per line.

    {"id": "spk1-001", "audio": "audio/spk1/001.flac", "duration": 3.35, "text": "hello",
     "speaker": "spk1", "offset": 0.0}

`speaker` and `offset` (start of a segment inside a longer recording, in
seconds) are optional; other keys are ignored. `audio` is absolute or relative
to the manifest's folder; in memory it is always an absolute path.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from asr.errors import AsrError
from asr.files import file_problem, output_problem

REQUIRED_KEYS = ("id", "audio", "duration", "text")
MAX_SECONDS = 24 * 3600.0  # a longer duration or offset is taken for a unit mistake (ms, samples) or garbage


class ManifestError(AsrError):
    """A manifest line is malformed, or ids repeat."""


@dataclass(frozen=True)
class Utterance:
    """One utterance: where its audio is and what is said."""

    id: str  # unique within a manifest
    audio: str  # absolute path of the audio file
    duration: float  # seconds of speech (of the segment when offset/duration cut a recording)
    text: str  # transcript, not normalised
    speaker: str | None = None  # speaker id, if known
    offset: float = 0.0  # start of the segment inside the audio file, seconds


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def breaks_lines(text: str) -> bool:
    """True when `text` holds a line break (any that str.splitlines knows) or another control character."""
    return len((text + "x").splitlines()) > 1 or any(unicodedata.category(c) == "Cc" for c in text)


def parse_record(record: object, base: Path) -> Utterance:
    """An Utterance from one decoded JSON line; `base` resolves relative audio paths. Raises ValueError."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    uid, audio, text = record["id"], record["audio"], record["text"]
    speaker = record.get("speaker")
    if not isinstance(uid, str) or not uid.strip():
        raise ValueError(f"'id' must be a non-empty string, got {uid!r}")
    if breaks_lines(uid):
        raise ValueError(f"'id' holds a line break or control character: {uid!r}")
    if uid != uid.strip():
        raise ValueError(f"'id' has spaces at its ends: {uid!r}")
    if not isinstance(audio, str) or not audio.strip() or "\0" in audio:
        raise ValueError(f"'audio' must be a non-empty path without NUL characters, got {audio!r}")
    if not isinstance(text, str):
        raise ValueError(f"'text' must be a string, got {text!r}")
    if speaker is not None and not isinstance(speaker, str):
        raise ValueError(f"'speaker' must be a string or null, got {speaker!r}")
    if speaker is not None and breaks_lines(speaker):
        raise ValueError(f"'speaker' holds a line break or control character: {speaker!r}")
    duration = _number(record["duration"])
    if duration is None or not 0 < duration <= MAX_SECONDS:
        raise ValueError(f"'duration' must be a positive number of seconds up to {MAX_SECONDS:g}, "
                         f"got {record['duration']!r}")
    offset = _number(record.get("offset", 0.0))
    if offset is None or not 0 <= offset <= MAX_SECONDS:
        raise ValueError(f"'offset' must be a number of seconds from 0 to {MAX_SECONDS:g}, got {record.get('offset')!r}")
    path = Path(audio)
    if not path.is_absolute():
        path = base / path
    return Utterance(uid, os.path.normpath(path), duration, text, speaker, offset)


def scan_manifest(path: str | os.PathLike) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """Every well-formed utterance (duplicates included) and ("file:line", problem) per bad line.

    A manifest without a single utterance line is one problem ("file", "empty manifest").
    """
    path = Path(path)
    problem = file_problem(path, "manifest")
    if problem is not None:
        raise ManifestError(f"{path}: {problem}")
    base = path.resolve().parent
    utterances: list[Utterance] = []
    problems: list[tuple[str, str]] = []
    lines = 0
    try:
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    problems.append((f"{path}:{line_no}", f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                                          f"{err.start + 1})"))
                    lines += 1
                    continue
                if not line.strip():
                    continue
                lines += 1
                try:
                    utterances.append(parse_record(json.loads(line), base))
                except json.JSONDecodeError as err:
                    problems.append((f"{path}:{line_no}", f"not valid JSON: {err.msg} (column {err.colno})"))
                except (ValueError, RecursionError) as err:
                    problems.append((f"{path}:{line_no}", str(err) or type(err).__name__))
    except OSError as err:
        raise ManifestError(f"{path}: cannot read manifest: {err.strerror or err}") from err
    if lines == 0:
        problems.append((str(path), "empty manifest (no utterance lines)"))
    return utterances, problems


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Utterances of a JSON Lines manifest; ManifestError names the file and line of the first fault."""
    utterances, problems = scan_manifest(path)
    if problems:
        more = f" (and {len(problems) - 1} more bad lines)" if len(problems) > 1 else ""
        raise ManifestError(f"{problems[0][0]}: {problems[0][1]}{more}")
    check_unique_ids(utterances, str(path))
    return utterances


def check_unique_ids(utterances: Iterable[Utterance], where: str) -> None:
    """Raise ManifestError listing ids that occur more than once."""
    seen: set[str] = set()
    dups: list[str] = []
    for utt in utterances:
        if utt.id in seen and utt.id not in dups:
            dups.append(utt.id)
        seen.add(utt.id)
    if dups:
        shown = ", ".join(dups[:5]) + (f" ... ({len(dups)} ids)" if len(dups) > 5 else "")
        raise ManifestError(f"{where}: duplicate utterance ids: {shown}")


def utterance_record(utt: Utterance, base: Path | None = None) -> dict:
    """The JSON object of one utterance; audio relative to `base` when it lies inside it."""
    audio = utt.audio
    if base is not None:
        try:
            audio = Path(utt.audio).relative_to(base).as_posix()
        except ValueError:
            pass
    record = {"id": utt.id, "audio": audio, "duration": utt.duration, "text": utt.text, "speaker": utt.speaker}
    if utt.offset:
        record["offset"] = utt.offset
    return record


def write_manifest(utterances: Iterable[Utterance], path: str | os.PathLike) -> int:
    """Write a manifest atomically (temp file + rename); returns the number of lines."""
    path = Path(path)
    problem = output_problem(path, "manifest")
    if problem is not None:
        raise ManifestError(f"{path}: {problem}; not written over")
    count = 0
    try:
        base = path.resolve().parent
        base.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for utt in utterances:
                    f.write(json.dumps(utterance_record(utt, base), ensure_ascii=False) + "\n")
                    count += 1
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop in the path (Path.resolve)
        raise ManifestError(f"{path}: cannot write manifest: {getattr(err, 'strerror', None) or err}") from None
    return count
