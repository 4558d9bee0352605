"""What the loader reads: shard URLs or the utterances of a manifest.

    ["a.tar", "b.tar"]                a list of shard URLs (each may hold braces)
    "dir/train-{000000..000009}.tar"  a brace pattern; "http(s)://..." and "pipe:cmd" URLs work too
                                      (only as typed: names read from an index or a folder listing
                                      are local files, never URLs or commands)
    "dir/train.index.jsonl"           an index written by `asr shard` (counts let the loader
                                      notice samples lost in a broken shard)
    "dir/"                            the single *.index.jsonl inside, else every *.tar, sorted
    "manifest.jsonl"                  a JSON Lines manifest, audio read from disk per utterance
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from webdataset.shardlists import expand_urls

from asr.data.manifest import Utterance, read_manifest
from asr.data.samples import ShardSource
from asr.data.shards import INDEX_SUFFIX, read_index
from asr.errors import AsrError
from asr.files import file_problem

Source = str | os.PathLike | list[str | os.PathLike] | tuple[str | os.PathLike, ...]


class SourceError(AsrError):
    """A loader source that names nothing readable."""


@dataclass(frozen=True)
class ResolvedSource:
    """Either shards or manifest utterances (the other is empty)."""

    name: str  # what the user gave, for messages
    shards: tuple[ShardSource, ...] = ()  # shard URLs in their listed order
    utterances: tuple[Utterance, ...] = ()  # manifest utterances in file order

    @property
    def is_manifest(self) -> bool:
        """True for a manifest source (audio read from disk per utterance)."""
        return not self.shards


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def _check_shard_files(paths: list[str], name: str) -> None:
    """SourceError naming the first local shard that is not a readable regular file, and how many are not."""
    bad = [(p, problem) for p in paths for problem in [file_problem(p, "shard file")] if problem is not None]
    if bad:
        raise SourceError(f"{name}: {len(bad)} of {len(paths)} shard file(s) not found or not readable, "
                          f"e.g. {bad[0][0]}: {bad[0][1]}")


def _shards_from_urls(urls: list[str], name: str) -> ResolvedSource:
    try:
        expanded = [u for url in urls for u in expand_urls(url)]
    except ValueError as err:  # a malformed brace pattern
        raise SourceError(f"{name}: not a valid shard pattern: {err}") from None
    _check_shard_files([u for u in expanded if _is_local(u)], name)
    if not expanded:
        raise SourceError(f"{name}: no shards")
    return ResolvedSource(name, shards=tuple(ShardSource(u, local=_is_local(u)) for u in expanded))


def _check_shard_name(index: Path, name: str) -> str:
    """An index row names a file beside the index: no folder, no URL scheme, no command."""
    if not name or name in (".", "..") or any(c in name for c in "/\\:\n\r\0"):
        raise SourceError(f"{index}: shard name {name!r} is not a plain file name beside the index "
                          "(no folders, URL schemes or pipe: commands in an index)")
    return name


def _shards_from_index(path: Path) -> ResolvedSource:
    index = read_index(path)
    folder = path.resolve().parent
    shards = tuple(ShardSource(str(folder / _check_shard_name(path, e.shard)), e.utterances, local=True)
                   for e in index.shards)
    if not shards:
        raise SourceError(f"{path}: no shards to read (the index lists none)")
    _check_shard_files([s.url for s in shards], str(path))
    return ResolvedSource(str(path), shards=shards)


def _from_directory(path: Path) -> ResolvedSource:
    indexes = sorted(path.glob(f"*{INDEX_SUFFIX}"))
    if len(indexes) > 1:
        raise SourceError(f"{path}: several indexes ({', '.join(p.name for p in indexes)}); name one of them")
    if indexes:
        return _shards_from_index(indexes[0])
    tars = sorted(str(p) for p in path.resolve().glob("*.tar") if p.is_file())
    if not tars:
        raise SourceError(f"{path}: no *{INDEX_SUFFIX} and no *.tar shards")
    return ResolvedSource(str(path), shards=tuple(ShardSource(t, local=True) for t in tars))


def resolve_source(source: Source) -> ResolvedSource:
    """Turn what the user gave into shard URLs or manifest utterances (see the module docstring)."""
    if isinstance(source, (list, tuple)):
        return _shards_from_urls([os.fspath(s) for s in source], f"{len(source)} shard URLs")
    text = os.fspath(source)
    if _is_local(text) and os.path.isdir(text):
        return _from_directory(Path(text))
    if text.endswith(INDEX_SUFFIX):
        return _shards_from_index(Path(text))
    if text.endswith((".jsonl", ".json")):
        return ResolvedSource(text, utterances=tuple(read_manifest(text)))
    return _shards_from_urls([text], text)
