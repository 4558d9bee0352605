"""Write a manifest as WebDataset tar shards, plus an index of the shards.

Each utterance becomes two tar members sharing a key:

    KEY.flac   the audio bytes as stored (the file's own extension: .wav, .flac, ...);
               a segment of a longer recording (offset > 0, or a file longer than
               the duration) is cut out and stored as 16-bit FLAC
    KEY.json   {"id", "text", "duration", "speaker"}

WebDataset splits member names at the first dot, so KEY is the utterance id with
dots, slashes and whitespace replaced by "_" (made unique if that makes two ids
equal); the true id is in the json. The index `{prefix}.index.jsonl` has one
row per shard and a last row of totals:

    {"shard": "train-000000.tar", "utterances": 100, "seconds": 351.2}
    {"total": {"shards": 15, "utterances": 1500, "seconds": 6224.7}}
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import re
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import soundfile
from tqdm import tqdm

from asr.audio import audio_info, load_audio, wav_shortfall
from asr.data.manifest import Utterance, check_unique_ids
from asr.errors import AsrError
from asr.files import file_problem
from asr.folder_lock import FolderLock, command_line

log = logging.getLogger(__name__)

INDEX_SUFFIX = ".index.jsonl"
SHARD_PATTERN = "{prefix}-{index:06d}.tar"
CUT_TOLERANCE = 0.05  # a whole file longer than its duration by more than this many seconds is cut
_UNSAFE = re.compile(r"[./\\\s]")


class ShardError(AsrError):
    """Shards could not be written, or do not hold what was written."""


@dataclass(frozen=True)
class ShardEntry:
    """One row of the index."""

    shard: str  # file name, relative to the index's folder
    utterances: int  # samples in the shard
    seconds: float  # total duration of its samples


@dataclass(frozen=True)
class ShardIndex:
    """Every shard of a set, with totals."""

    shards: tuple[ShardEntry, ...]  # in shard order

    @property
    def utterances(self) -> int:
        """Samples in all shards."""
        return sum(s.utterances for s in self.shards)

    @property
    def seconds(self) -> float:
        """Total duration of all shards."""
        return sum(s.seconds for s in self.shards)


def sample_key(utt_id: str) -> str:
    """A tar member key for an id: no dots (WebDataset's key/extension split), slashes or spaces."""
    return _UNSAFE.sub("_", utt_id)


def unique_keys(ids: Sequence[str]) -> list[str]:
    """sample_key of each id, with a numeric suffix where two ids map to the same key."""
    keys, used = [], set()
    for uid in ids:
        key, n = sample_key(uid), 1
        while key in used:
            key, n = f"{sample_key(uid)}-{n}", n + 1
        used.add(key)
        keys.append(key)
    return keys


def order_utterances(utterances: Sequence[Utterance], order: str, seed: int) -> list[Utterance]:
    """Shuffled with `seed`, or sorted by duration (ties by id)."""
    if order == "shuffle":
        out = list(utterances)
        random.Random(seed).shuffle(out)
        return out
    if order == "sorted":
        return sorted(utterances, key=lambda u: (u.duration, u.id))
    raise ValueError(f"order must be 'shuffle' or 'sorted', not {order!r}")


def audio_member(utt: Utterance) -> tuple[str, bytes, float]:
    """(extension, bytes, seconds) of an utterance's audio: the file as stored, or its segment as FLAC."""
    short = wav_shortfall(utt.audio)
    if short is not None:
        log.warning("utterance %r: %s is a truncated WAV (the header declares %d bytes of samples, the file holds %d); "
                    "stored as it is", utt.id, utt.audio, *short)
    try:
        info = audio_info(utt.audio)
        if utt.offset == 0 and info.duration <= utt.duration + CUT_TOLERANCE:
            ext = Path(utt.audio).suffix.lower().lstrip(".") or "audio"
            return ext, Path(utt.audio).read_bytes(), utt.duration
        wave = load_audio(utt.audio, info.sample_rate, name=utt.id, offset=utt.offset, duration=utt.duration)
    except (AsrError, OSError) as err:
        raise ShardError(f"utterance {utt.id!r}: cannot read {utt.audio}: {err}") from err
    buf = io.BytesIO()
    soundfile.write(buf, wave.numpy(), info.sample_rate, format="FLAC", subtype="PCM_16")
    return "flac", buf.getvalue(), wave.shape[-1] / info.sample_rate


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: identical input -> identical tar
    tar.addfile(info, io.BytesIO(data))


def write_shard(
    path: Path, utterances: Sequence[Utterance], keys: Sequence[str], on_sample: Callable[[int], object] | None = None
) -> ShardEntry:
    """Write one tar atomically (temporary name, then rename); returns its index row."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    seconds = 0.0
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for utt, key in zip(utterances, keys):
                ext, data, duration = audio_member(utt)
                meta = {"id": utt.id, "text": utt.text, "duration": round(duration, 6), "speaker": utt.speaker}
                _add_member(tar, f"{key}.{ext}", data)
                _add_member(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
                seconds += duration
                if on_sample is not None:
                    on_sample(1)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ShardEntry(path.name, len(utterances), round(seconds, 3))


def count_samples(path: str | os.PathLike) -> int:
    """Samples (json members) in a tar; reads the whole file, so truncation raises."""
    with tarfile.open(path, "r") as tar:
        return sum(1 for m in tar.getmembers() if m.isreg() and m.name.endswith(".json"))


def write_index(index: ShardIndex, path: str | os.PathLike) -> None:
    """Write the index atomically: one row per shard, then the totals."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    rows = [{"shard": s.shard, "utterances": s.utterances, "seconds": s.seconds} for s in index.shards]
    rows.append({"total": {"shards": len(index.shards), "utterances": index.utterances, "seconds": round(index.seconds, 3)}})
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def read_index(path: str | os.PathLike) -> ShardIndex:
    """Read an index written by write_index; ShardError when malformed or the totals disagree."""
    problem = file_problem(path, "shard index")
    if problem is not None:
        raise ShardError(f"{path}: {problem}")
    entries, total = [], None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ShardError(f"{path}: cannot read shard index: {err}") from err
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            if "total" in row:
                total = row["total"]
                if not isinstance(total, dict):
                    raise ValueError(f"'total' must be an object, got {total!r}")
                _count_field(total, "shards", "total")
                _count_field(total, "utterances", "total")
            else:
                seconds = row["seconds"]
                if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
                    raise ValueError(f"'seconds' must be a finite number >= 0, got {seconds!r}")
                entries.append(ShardEntry(str(row["shard"]), _count_field(row, "utterances"), float(seconds)))
        except KeyError as err:
            raise ShardError(f"{path}:{line_no}: bad index row: missing key {err}") from err
        except (ValueError, TypeError, RecursionError) as err:
            raise ShardError(f"{path}:{line_no}: bad index row: {err}") from err
    seen: set[str] = set()
    for entry in entries:
        if entry.shard in seen:
            raise ShardError(f"{path}: shard {entry.shard!r} is listed twice (its samples would be read twice)")
        seen.add(entry.shard)
    index = ShardIndex(tuple(entries))
    if total is None or total.get("shards") != len(entries) or total.get("utterances") != index.utterances:
        raise ShardError(f"{path}: totals row missing or disagreeing with the shard rows (incomplete index?)")
    return index


def _count_field(row: dict, key: str, where: str = "") -> int:
    """row[key] as a count (an integer >= 0); ValueError naming the key otherwise."""
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"'{where + '.' if where else ''}{key}' must be an integer >= 0, got {value!r}")
    return value


def write_shards(
    utterances: Sequence[Utterance],
    out_dir: str | os.PathLike,
    *,
    shard_size: int,
    order: Literal["shuffle", "sorted"] = "shuffle",
    seed: int = 0,
    prefix: str = "train",
    progress: bool = True,
) -> ShardIndex:
    """Write `utterances` as tar shards of `shard_size` samples and an index; verifies the count at the end."""
    if shard_size < 1:
        raise ShardError(f"shard size must be at least 1, got {shard_size}")
    if not prefix or prefix.startswith(".") or any(c in prefix for c in "/\\:\n\r\0"):
        raise ShardError(f"prefix {prefix!r} must be a plain file name start (no folders, ':' or leading '.'), "
                         "so that the index can name the shards beside it")
    if not utterances:
        raise ShardError("no utterances to write")
    check_unique_ids(utterances, "manifest")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ShardError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    ordered = order_utterances(utterances, order, seed)
    keys = unique_keys([u.id for u in ordered])
    entries = []
    with FolderLock(out, command_line()), \
            tqdm(total=len(ordered), desc=f"shards {prefix}", unit="utt", disable=not progress) as bar:
        for n, start in enumerate(range(0, len(ordered), shard_size)):
            chunk = slice(start, start + shard_size)
            path = out / SHARD_PATTERN.format(prefix=prefix, index=n)
            entries.append(write_shard(path, ordered[chunk], keys[chunk], on_sample=bar.update))
        index = ShardIndex(tuple(entries))
        verify_shards(out, index, expected=len(utterances))
        write_index(index, out / f"{prefix}{INDEX_SUFFIX}")
        _warn_stale(out, prefix, {e.shard for e in entries})
    return index


def verify_shards(folder: Path, index: ShardIndex, expected: int) -> None:
    """Re-read every shard: each must hold the samples its index row says, and all of them `expected`."""
    found = 0
    for entry in index.shards:
        try:
            count = count_samples(folder / entry.shard)
        except (OSError, tarfile.TarError) as err:
            raise ShardError(f"{folder / entry.shard}: cannot re-read the shard just written: {err}") from err
        if count != entry.utterances:
            raise ShardError(f"{folder / entry.shard}: holds {count} samples, {entry.utterances} were written")
        found += count
    if found != expected:
        raise ShardError(f"{folder}: shards hold {found} samples but the manifest has {expected}")


def _warn_stale(folder: Path, prefix: str, written: Iterable[str]) -> None:
    pattern = re.compile(re.escape(prefix) + r"-\d{6}\.tar")
    stale = sorted(p.name for p in folder.iterdir() if pattern.fullmatch(p.name) and p.name not in set(written))
    if stale:
        log.warning("%s holds %d older shard(s) not in the new index (e.g. %s); the index lists only the new ones",
                    folder, len(stale), stale[0])
