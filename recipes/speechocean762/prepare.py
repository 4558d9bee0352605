"""speechocean762 in the JSON Lines layout: train.jsonl, dev.jsonl (unseen speakers) and audio/.

The dev split ranks checkpoints and is also the split scored at the end; a test.jsonl, when the
folder has one, is scored too.
"""

from __future__ import annotations

import os
from pathlib import Path

from asr.recipe import copy_manifests

# Why `asr download` has nothing to fetch for this recipe.
NO_DOWNLOAD = "the recipe reads the JSON Lines layout of a prepared copy"
TRAIN = "train"  # split trained on
DEV = "dev"  # split that ranks checkpoints during training
TESTS = ("dev", "test")  # splits scored at the end (test only when present)


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Copy train.jsonl, dev.jsonl (and test.jsonl if present) with absolute audio paths; returns split -> manifest."""
    return copy_manifests(data_dir, out_dir, ("train", "dev", "test"), required=("train", "dev"))
