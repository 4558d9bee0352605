"""Kaldi data directories -> utterances.

Files read (each line `ID rest...`, split at the first run of whitespace):

    wav.scp    recording-id  path          (required; plain paths only, no `cmd |` pipes)
    text       utterance-id  transcript    (required; the transcript may be empty)
    segments   utterance-id  recording-id  start  end   (optional; end -1 = to the end)
    utt2spk    utterance-id  speaker-id    (optional)

Without `segments` every recording is one utterance with the same id. Relative
paths in wav.scp are resolved against `root` (the current directory by default,
as Kaldi recipes run their scripts from the recipe folder).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from asr.audio import AudioError, audio_info
from asr.data.manifest import Utterance
from asr.errors import AsrError

SHOW_IDS = 5  # ids listed in an error message before "... (N in all)"
SEGMENT_TOLERANCE = 0.05  # seconds a segment may run past the end of its recording


class KaldiError(AsrError):
    """A Kaldi data directory is incomplete or inconsistent."""


@dataclass(frozen=True)
class _Line:
    key: str  # first field
    rest: str  # everything after the first whitespace, stripped
    where: str  # "file:line" for messages


def read_table(path: Path, *, allow_empty_rest: bool = False) -> dict[str, _Line]:
    """`key rest` lines of a Kaldi table file; KaldiError on duplicate keys or missing values."""
    table: dict[str, _Line] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise KaldiError(f"{path}: cannot read: {err}") from err
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        key, rest = parts[0], parts[1].strip() if len(parts) > 1 else ""
        where = f"{path}:{line_no}"
        if not rest and not allow_empty_rest:
            raise KaldiError(f"{where}: {key!r} has no value")
        if key in table:
            raise KaldiError(f"{where}: {key!r} repeats (first at {table[key].where})")
        table[key] = _Line(key, rest, where)
    return table


def _ids(ids: set[str] | list[str]) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:SHOW_IDS]) + (f" ... ({len(ids)} in all)" if len(ids) > SHOW_IDS else "")


def _check_same(a: set[str], a_name: str, b: set[str], b_name: str) -> None:
    if a - b:
        raise KaldiError(f"{len(a - b)} id(s) in {a_name} but not in {b_name}: {_ids(a - b)}")
    if b - a:
        raise KaldiError(f"{len(b - a)} id(s) in {b_name} but not in {a_name}: {_ids(b - a)}")


def _recording_paths(wav_scp: Path, root: Path) -> dict[str, tuple[str, str]]:
    """recording id -> (absolute path, where); pipes are refused."""
    out = {}
    for rec, line in read_table(wav_scp).items():
        if line.rest.endswith("|") or line.rest.startswith("|"):
            raise KaldiError(
                f"{line.where}: {rec!r} is a piped command ({line.rest!r}); convert the audio to files first "
                "(commands in data files are not run)"
            )
        path = Path(line.rest)
        out[rec] = (os.path.normpath(path if path.is_absolute() else root / path), line.where)
    return out


def _duration(path: str, where: str, cache: dict[str, float]) -> float:
    if path not in cache:
        try:
            cache[path] = audio_info(path).duration
        except (AudioError, OSError) as err:
            raise KaldiError(f"{where}: cannot read audio {path}: {err}") from err
    return cache[path]


def _parse_segment(line: _Line) -> tuple[str, float, float]:
    fields = line.rest.split()
    try:
        if len(fields) != 3:
            raise ValueError
        rec, start, end = fields[0], float(fields[1]), float(fields[2])
    except ValueError:
        raise KaldiError(f"{line.where}: expected 'utt-id rec-id start end', got {line.key} {line.rest!r}") from None
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or (end != -1 and end <= start):
        raise KaldiError(f"{line.where}: bad segment times start={start} end={end}")
    return rec, start, end


def import_kaldi_dir(directory: str | os.PathLike, *, root: str | os.PathLike | None = None) -> list[Utterance]:
    """Utterances of a Kaldi data directory, in the order of its `text` file; durations from the audio."""
    directory = Path(directory)
    root = Path(root).resolve() if root is not None else Path.cwd()
    for name in ("wav.scp", "text"):
        if not (directory / name).is_file():
            raise KaldiError(f"{directory}: no {name} (not a Kaldi data directory?)")
    recordings = _recording_paths(directory / "wav.scp", root)
    texts = read_table(directory / "text", allow_empty_rest=True)
    if not texts:
        raise KaldiError(f"{directory / 'text'}: no utterances (empty file)")
    speakers = read_table(directory / "utt2spk") if (directory / "utt2spk").is_file() else None
    if speakers is not None:
        _check_same(set(texts), "text", set(speakers), "utt2spk")
    durations: dict[str, float] = {}

    if not (directory / "segments").is_file():
        _check_same(set(texts), "text", set(recordings), "wav.scp")
        return [
            Utterance(
                id=utt,
                audio=recordings[utt][0],
                duration=_duration(*recordings[utt], durations),
                text=line.rest,
                speaker=speakers[utt].rest if speakers else None,
            )
            for utt, line in texts.items()
        ]

    segments = read_table(directory / "segments")
    _check_same(set(texts), "text", set(segments), "segments")
    utterances = []
    for utt, line in texts.items():
        seg = segments[utt]
        rec, start, end = _parse_segment(seg)
        if rec not in recordings:
            raise KaldiError(f"{seg.where}: recording {rec!r} is not in wav.scp")
        total = _duration(*recordings[rec], durations)
        end = total if end == -1 else end
        if end > total + SEGMENT_TOLERANCE:
            raise KaldiError(f"{seg.where}: segment ends at {end:.3f} s but {rec!r} lasts {total:.3f} s")
        if start >= total:
            raise KaldiError(f"{seg.where}: segment starts at {start:.3f} s but {rec!r} lasts {total:.3f} s")
        utterances.append(
            Utterance(
                id=utt,
                audio=recordings[rec][0],
                duration=round(min(end, total) - start, 6),
                text=line.rest,
                speaker=speakers[utt].rest if speakers else None,
                offset=start,
            )
        )
    return utterances
