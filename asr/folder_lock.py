"""An exclusive lock on an output folder, so two processes never write one run or one shard set.

The lock is an advisory `flock` on FOLDER/.asr.lock holding the owner's pid and command; the
kernel drops it when the process ends, however it ends, so a killed run never leaves it stale.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from asr.errors import AsrError

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder is used unlocked
    fcntl = None

LOCK_NAME = ".asr.lock"


class FolderLockedError(AsrError):
    """Another process holds the folder's lock."""


class FolderLock:
    """Hold FOLDER/.asr.lock exclusively until `release` (or the end of a `with` block).

    >>> with FolderLock("exp/run1", "asr train"):  # doctest: +SKIP
    ...     ...
    """

    def __init__(self, folder: str | os.PathLike, command: str) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.fd: int | None = None
        if fcntl is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise FolderLockedError(f"{Path(folder)} is in use by {holder}; wait for it to finish or choose "
                                    "another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} ({command})\n".encode())
        self.fd = fd

    def release(self) -> None:
        """Let other processes use the folder (the lock file stays, empty of meaning)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def command_line() -> str:
    """This process's command, for the lock's holder line."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:150] if sys.argv else "python"
