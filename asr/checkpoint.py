"""Checkpoint files: atomic writes, `weights_only` loads, and averaging.

A checkpoint is one dict of plain values and tensors (never pickled objects):
`{"format": FORMAT, "config": dict, "vocab": [str], "model": state_dict,
"train_state": dict}` so `torch.load(path, weights_only=True)` can read it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from asr.errors import AsrError

FORMAT = 1
log = logging.getLogger(__name__)


class CheckpointError(AsrError):
    """A checkpoint that is missing, truncated or not one of ours."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write `payload` to `path` atomically: temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; CheckpointError naming the file if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, not a torch file, foreign pickle...
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "format" not in ckpt:
        raise CheckpointError(f"{path}: not an asr checkpoint (no 'format'/'model' entries)")
    if ckpt["format"] > FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {ckpt['format']} is newer than this asr ({FORMAT})")
    return ckpt


def load_first_good(paths: list[Path]) -> tuple[Path, dict[str, Any]] | None:
    """Load the first readable checkpoint of `paths`, warning about each bad one skipped."""
    for path in paths:
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping checkpoint: %s", err)
    return None


def average_state_dicts(paths: list[str | Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of several checkpoints (integer buffers from the last)."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for path in paths:
        state = load_checkpoint(path)["model"]
        if last and set(state) != set(last):
            raise CheckpointError(f"{path}: its parameters differ from {paths[0]}")
        for name, tensor in state.items():
            if tensor.is_floating_point():
                total[name] = total.get(name, 0) + tensor.double()
            last[name] = tensor
    return {
        name: (total[name] / len(paths)).to(tensor.dtype) if name in total else tensor
        for name, tensor in last.items()
    }


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
