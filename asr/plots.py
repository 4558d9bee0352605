"""PNG figures people would rather see than read: attention alignments, learning curves."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from asr.errors import AsrError  # noqa: E402
from asr.files import os_reason  # noqa: E402


def plot_attention(
    alignments: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, *, frame_shift_s: float | None = None
) -> Path:
    """One panel per utterance: attention weights (U output steps x T encoder frames)."""
    n = max(1, len(alignments))
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.6 * n), squeeze=False)
    for ax, weights, title in zip(axes[:, 0], alignments, titles):
        ax.imshow(np.asarray(weights), aspect="auto", origin="lower", interpolation="nearest", cmap="viridis")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("output step")
        ax.set_xlabel("encoder frame" if frame_shift_s is None else f"encoder frame ({frame_shift_s * 1000:.0f} ms)")
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(records: Sequence[dict], path: str | Path) -> Path:
    """Training loss by step, with dev loss and dev CER/WER at each validation."""
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if valid:
        steps = [r["step"] for r in valid]
        ax_loss.plot(steps, [r["dev_loss"] for r in valid], "o-", label="dev loss")
        ax_err.plot(steps, [r["dev_cer"] for r in valid], "o-", label="dev CER %")
        ax_err.plot(steps, [r["dev_wer"] for r in valid], "s-", label="dev WER %")
    ax_loss.set_xlabel("step")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_err.set_xlabel("step")
    ax_err.set_ylabel("%")
    ax_err.legend()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Write the figure to `path` through a temporary file; AsrError naming it when that fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=100)
        tmp.replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise AsrError(f"{path}: plot not written: {os_reason(err)}") from None
    finally:
        plt.close(fig)
    return path
