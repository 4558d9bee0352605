"""Opt-in corpus downloads: fetch a recipe's public archives, check them, unpack them.

A recipe whose corpus is public declares `DOWNLOADS = {part: Archive(url, sha256)}` (and
`DEFAULT_PARTS`) in its prepare.py; `asr download NAME --out DIR` then fetches the parts into
DIR, resuming a partial file where it stopped (HTTP Range), checks the SHA-256 when one is
known, and unpacks each archive once (a `.done` marker per part). Nothing else in the toolkit
ever downloads.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asr.errors import AsrError

log = logging.getLogger(__name__)

BLOCK = 1 << 20  # bytes read and hashed at a time


class DownloadError(AsrError):
    """An archive cannot be fetched, fails its checksum, or cannot be unpacked."""


@dataclass(frozen=True)
class Archive:
    """One downloadable part of a corpus."""

    url: str
    sha256: str | None = None  # None when the publisher gives no checksum (then only the unpacking checks it)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(archive: Archive, dest: Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download `archive` to `dest` (atomically: via dest.part, resumed when present); checks its SHA-256."""
    from tqdm import tqdm

    if dest.is_file():
        _check(archive, dest)
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(archive.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            if not resumed:
                have = 0
            total = response.length + have if response.length is not None else None
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(BLOCK), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise DownloadError(f"{archive.url}: download failed ({err}); run the same command again to resume") from None
    if total is not None and part.stat().st_size != total:  # the connection closed early
        raise DownloadError(f"{archive.url}: download stopped at {part.stat().st_size} of {total} bytes; "
                            f"run the same command again to resume")
    _check(archive, part)
    os.replace(part, dest)
    return dest


def _check(archive: Archive, path: Path) -> None:
    """DownloadError (and the file removed) when its SHA-256 is not the archive's."""
    if archive.sha256 is None:
        return
    got = sha256_of(path)
    if got != archive.sha256:
        path.unlink()
        raise DownloadError(f"{path}: SHA-256 {got} is not the expected {archive.sha256} for {archive.url} "
                            f"(the file was removed; run the command again)")


def unpack(path: Path, into: Path) -> None:
    """Extract a tar archive (any compression) into `into`, refusing members that leave it."""
    try:
        with tarfile.open(path) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise DownloadError(f"{path}: cannot be unpacked ({err})") from None


def download_corpus(downloads: dict[str, Archive], parts: Sequence[str], out: str | os.PathLike, *,
                    progress: bool = True, keep_archives: bool = False) -> Path:
    """Fetch and unpack `parts` of a corpus into OUT (each once); returns OUT."""
    out = Path(out)
    unknown = [p for p in parts if p not in downloads]
    if unknown:
        raise DownloadError(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(downloads)}")
    for name in parts:
        done = out / f".{name}.done"
        if done.exists():
            log.info("%s: already downloaded and unpacked", name)
            continue
        archive = downloads[name]
        path = fetch(archive, out / Path(urllib.parse.urlparse(archive.url).path).name, progress=progress)
        log.info("%s: unpacking %s", name, path)
        unpack(path, out)
        done.write_text(archive.url + "\n", encoding="utf-8")
        if not keep_archives:
            path.unlink()
    return out
