"""Checkpoint files: atomic writes, `weights_only` loads, and averaging.

A checkpoint is one dict of plain values and tensors (never pickled objects):
`{"format": FORMAT, "config": dict, "vocab": [str], "model": state_dict,
"train_state": dict}` so `torch.load(path, weights_only=True)` can read it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from asr.errors import AsrError

FORMAT = 1
BEST_NAME = re.compile(r"best-step(\d+)\.pt")  # the only names a run's best list may hold
log = logging.getLogger(__name__)


def best_step(name: str) -> int | None:
    """N of a `best-stepN.pt` file name; None for any other name (a path, a copy, `../x`)."""
    match = BEST_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


class CheckpointError(AsrError):
    """A checkpoint that is missing, truncated or not one of ours."""


def save_checkpoint(payload: dict[str, Any], path: str | Path, *, previous: str | Path | None = None) -> None:
    """Write `payload` to `path` atomically: temporary file in the same folder, fsync, rename.

    With `previous`, an existing `path` is renamed to it just before the new file takes its
    place, so a crash at any moment leaves at least one complete checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
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
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, not a torch file, foreign pickle...
        raise CheckpointError(f"{path}: unreadable checkpoint ({_reason(err)})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "format" not in ckpt:
        raise CheckpointError(f"{path}: not an asr checkpoint (no 'format'/'model' entries)")
    if ckpt["format"] > FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {ckpt['format']} is newer than this asr ({FORMAT})")
    return ckpt


def _reason(err: Exception) -> str:
    """One line saying why torch.load failed: its weights-only refusals run to a dozen lines of
    advice, of which the line after "WeightsUnpickler error:" is the reason."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = text.split(marker, 1)[1].strip().splitlines()[0].split(". ")[0]
        return f"not a plain-data torch file; weights-only loading refused it: {detail}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first.split('. ')[0]}"[:300]


def init_weights(model: torch.nn.Module, path: str | Path, vocab: list[str]) -> None:
    """Fine-tuning: copy a checkpoint's weights (CMVN statistics included) into `model`, nothing else.

    The vocabulary must be the same, symbol for symbol (an output id means a character), and
    every tensor must exist in both with the same shape; CheckpointError names the first that
    does not. Optimizer, schedule and step are not taken: training starts at step 0.
    """
    ckpt = load_checkpoint(path)
    theirs = list(ckpt.get("vocab", []))
    if theirs != list(vocab):
        extra = sorted(set(theirs) ^ set(vocab))
        detail = f"symbols in one only: {extra[:10]}" if extra else "the same symbols in another order"
        raise CheckpointError(f"{path}: its vocabulary ({len(theirs)} symbols) differs from this run's "
                              f"({len(vocab)}): {detail}")
    state, mine = ckpt["model"], model.state_dict()
    for key in sorted(set(state) ^ set(mine)):
        where = "the checkpoint" if key in state else "this model"
        raise CheckpointError(f"{path}: tensor {key} exists only in {where}; the architectures differ")
    for key, value in mine.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{path}: tensor {key} has shape {tuple(state[key].shape)} there and "
                                  f"{tuple(value.shape)} here; the architectures differ")
    model.load_state_dict(state)
    log.info("initialised the model from %s", path)


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


def best_checkpoints(run_dir: str | Path, count: int = 0) -> list[Path]:
    """The best-stepN.pt files of a run, best first (as ranked, by train.best_by, in its newest checkpoint)."""
    run_dir = Path(run_dir)
    found = load_first_good([p for p in (run_dir / "last.pt", run_dir / "prev.pt") if p.exists()])
    names = [name for _, name in found[1]["train_state"].get("best", [])] if found else []
    ranked = [run_dir / n for n in names if isinstance(n, str) and best_step(n) is not None]
    ranked = [p for p in ranked if p.is_file()] or sorted(
        (p for p in run_dir.glob("best-step*.pt") if best_step(p.name) is not None), key=lambda p: best_step(p.name))
    return ranked[:count] if count > 0 else ranked


def average_checkpoints(paths: list[str | Path], out: str | Path) -> None:
    """Write a model file whose weights are the mean of `paths` (config and vocabulary of the first)."""
    first = load_checkpoint(paths[0])
    model = {"config": first.get("config", {}), "vocab": first.get("vocab", []),
             "model": average_state_dicts(paths), "averaged_from": [str(p) for p in paths]}
    save_checkpoint(model, out)
