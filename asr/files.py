"""What is wrong with a path given to a command, in words, and output folders checked before the work
starts (standard library only).

Inputs (manifests, indexes, shards, audio, transcripts) are checked with `file_problem`
before they are opened: opening a FIFO would block, a device reads as an endless or empty
stream, and a symlink loop or a directory makes the standard library raise a different error
each time. Each case becomes one phrase that says what the path is. Outputs (`--report`,
`--output-dir`, `--out`, `out_dir`) are checked with `output_folder` / `output_file` up front, so
an hour of decoding or training never ends in a traceback from the last write; `os_reason`
says an OS error while writing in one phrase.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from asr.errors import AsrError

# st_mode test -> what to call a path that is not a regular file
_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_problem(path: str | os.PathLike, what: str = "file") -> str | None:
    """Why `path` cannot be read as a regular file, e.g. "is a directory"; None when it can be.

    `what` names the expected file in the phrases for a missing path and a directory
    ("no such manifest", "is a directory, not a manifest").
    """
    try:
        mode = os.stat(path).st_mode
    except ValueError:  # an embedded NUL byte
        return "is not a valid path (it holds a NUL character)"
    except FileNotFoundError:
        if os.path.islink(path):
            return f"is a dangling symbolic link (to {os.readlink(path)})"
        return f"no such {what}"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if err.errno == errno.ENOTDIR:
            return f"no such {what} (a part of the path is not a folder)"
        return f"cannot be read ({err.strerror or err})"
    if stat.S_ISDIR(mode):
        article = "an" if what[:1].lower() in "aeiou" else "a"
        return f"is a directory, not {article} {what}"
    for test, name in _SPECIAL:
        if test(mode):
            return f"is not a regular file ({name})"
    return None


def output_problem(path: str | os.PathLike, what: str = "file") -> str | None:
    """Why a file written to `path` (by renaming a temporary file over it) would replace something that is
    not a regular file, e.g. "is a directory" or "is not a regular file (a character device)"; None when
    `path` is free or a regular file (or a link to one)."""
    if not os.path.lexists(path):
        return None
    return file_problem(path, what)


class OutputError(AsrError):
    """An output file or folder that cannot be written."""


def os_reason(err: OSError) -> str:
    """One phrase for an OS error, with its symbolic name, e.g. "no space left on device (ENOSPC)"."""
    text = (err.strerror or str(err) or type(err).__name__).rstrip(".")
    text = text[:1].lower() + text[1:]
    name = errno.errorcode.get(err.errno) if isinstance(err.errno, int) else None
    return f"{text} ({name})" if name else text


def output_folder(path: str | os.PathLike, what: str) -> Path:
    """`path` as a folder this process can write in, created when missing; OutputError naming
    `what` (the option, e.g. "--report") when it is a file or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # a probe: permissions, read-only mounts, full inodes
            pass
    except OSError as err:
        raise OutputError(f"{what} {path}: cannot write there: {os_reason(err)}") from None
    return path


def output_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a file this process can write (its folder created when missing); OutputError
    naming `what` when it is a folder or its folder cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name")
    problem = output_problem(path)
    if problem:
        raise OutputError(f"{what} {path}: {problem}")
    output_folder(path.parent, f"{what} {path}: its folder")
    return path
