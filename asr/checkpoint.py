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
from asr.files import os_reason

FORMAT = 1
BEST_NAME = re.compile(r"best-step(\d+)\.pt")  # the only names a run's best list may hold
# save_checkpoint's temporaries of the files a run writes (.last.pt.RANDOM.tmp, .best-stepN.pt.RANDOM.tmp)
TEMPORARY = re.compile(r"\.(last|best-step\d+)\.pt\.\w+\.tmp")
# Config entries that make two checkpoints' models the same network reading the same features;
# the entries named in TRAINING_ONLY act in training mode only and may differ.
MODEL_SECTIONS = ("frontend", "model", "text")
TRAINING_ONLY = re.compile(r"frontend\.(specaug|silence_pad|level_noise|vtlp)(\..*)?|frontend\.features\.dither|"
                           r"model\.label_smoothing|.*\.dropout")
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
    A failed write (disk full, read-only folder, `path` a folder) is a CheckpointError naming the
    file and the reason, and leaves no temporary file behind.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: not written: it is a folder; give a file name")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(f"{path}: not written: {os_reason(err)}") from None
        raise
    _fsync_dir(path.parent)


def remove_stale_temporaries(folder: str | Path) -> list[str]:
    """Delete the temporaries of last.pt and best-stepN.pt that writes killed midway left in the run
    folder `folder` (the caller holds the folder's lock, so no live write owns them); returns their names."""
    removed = []
    for tmp in sorted(Path(folder).glob(".*.tmp")):
        if TEMPORARY.fullmatch(tmp.name) and tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return removed


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
    problem = vocab_difference(ckpt.get("vocab", []), vocab)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    load_fitting(model, ckpt["model"], path)
    log.info("initialised the model from %s", path)


def vocab_difference(theirs: Any, mine: list[str]) -> str | None:
    """How a checkpoint's vocabulary differs from this run's, in words; None when they are the same."""
    theirs = list(theirs) if isinstance(theirs, (list, tuple)) else []
    if theirs == list(mine):
        return None
    extra = sorted(set(theirs) ^ set(mine))
    detail = f"symbols in one only: {extra[:10]}" if extra else "the same symbols in another order"
    return f"its vocabulary ({len(theirs)} symbols) differs from this run's ({len(mine)}): {detail}"


def misfit(model: torch.nn.Module, state: Any) -> str | None:
    """Why the weights `state` do not fit `model` (the first differing tensor name or shape); None if they do."""
    if not isinstance(state, dict):
        return f"its weights are a {type(state).__name__}, not a dict of tensors"
    return state_difference(model.state_dict(), state, "the model the config builds", "the checkpoint", "the model")


def state_difference(mine: dict[str, Any], theirs: dict[str, Any], mine_name: str, theirs_name: str,
                     mine_short: str) -> str | None:
    """The first way the weights `theirs` differ from `mine`: a tensor in one only, a non-tensor, another shape."""
    for key in sorted(set(theirs) ^ set(mine)):
        return f"tensor {key} exists only in {theirs_name if key in theirs else mine_name}"
    for key, value in mine.items():
        other = theirs[key]
        if not torch.is_tensor(other):
            return f"entry {key} is a {type(other).__name__}, not a tensor"
        if tuple(other.shape) != tuple(value.shape):
            return f"tensor {key} has shape {tuple(other.shape)} there and {tuple(value.shape)} in {mine_short}"
    return None


def load_fitting(model: torch.nn.Module, state: Any, path: str | Path, hint: str = "the architectures differ") -> None:
    """Load `state` into `model`, or CheckpointError naming `path` and the first tensor that does not fit."""
    problem = misfit(model, state)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}; {hint}")
    model.load_state_dict(state)


def load_first_good(paths: list[Path]) -> tuple[Path, dict[str, Any]] | None:
    """Load the first readable checkpoint of `paths`, warning about each bad one skipped."""
    for path in paths:
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping checkpoint: %s", err)
    return None


def average_state_dicts(paths: list[str | Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of several checkpoints (integer buffers from the last).

    The checkpoints must hold one network: the same tensors and shapes, vocabulary and model
    config (frontend, model, text; training-only entries aside), and finite weights;
    CheckpointError names the two files and the first difference, or the non-finite tensor.
    """
    if not paths:
        raise CheckpointError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    first: dict[str, Any] | None = None
    for path in paths:
        ckpt = load_checkpoint(path)
        state = ckpt["model"]
        _check_finite(state, path)
        if first is None:
            first = ckpt
        else:
            problem = _difference(first, ckpt)
            if problem is not None:
                raise CheckpointError(f"{path}: cannot be averaged with {paths[0]}: {problem}")
        for name, tensor in state.items():
            if tensor.is_floating_point():
                total[name] = total.get(name, 0) + tensor.double()
            last[name] = tensor
    return {
        name: (total[name] / len(paths)).to(tensor.dtype) if name in total else tensor
        for name, tensor in last.items()
    }


def _check_finite(state: Any, path: str | Path) -> None:
    """CheckpointError naming the first tensor of `state` that is not a tensor or holds NaN or inf."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its weights are a {type(state).__name__}, not a dict of tensors")
    for name, tensor in state.items():
        if not torch.is_tensor(tensor):
            raise CheckpointError(f"{path}: entry {name} of its weights is a {type(tensor).__name__}, not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {name} holds non-finite values (NaN or inf); not averaged")


def _difference(first: dict[str, Any], other: dict[str, Any]) -> str | None:
    """The first way `other`'s network differs from `first`'s (tensors, vocabulary, model config); None if none."""
    problem = state_difference(first["model"], other["model"], "the other", "this one", "the other")
    if problem is not None:
        return problem
    if list(first.get("vocab", [])) != list(other.get("vocab", [])):
        return "their vocabularies differ"
    changed = config_changes(_model_config(first), _model_config(other))
    changed = [c for c in changed if not TRAINING_ONLY.fullmatch(c.split(":", 1)[0])]
    if changed:
        return f"their model configs differ ({'; '.join(changed[:3])})"
    return None


def _model_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    return {section: config.get(section) for section in MODEL_SECTIONS}


def config_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two plain config dicts, as "key: old -> new"."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += config_changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


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
    state = average_state_dicts(paths)
    first = load_checkpoint(paths[0])
    model = {"config": first.get("config", {}), "vocab": first.get("vocab", []),
             "model": state, "averaged_from": [str(p) for p in paths]}
    save_checkpoint(model, out)
