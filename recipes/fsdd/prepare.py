"""Free Spoken Digit Dataset in the JSON Lines layout: train.jsonl, test.jsonl and audio/<speaker>/*.flac.

The corpus has no separate dev set: its test split (held-out recordings) doubles as the dev set
that ranks checkpoints, as in conf/las.yaml.
"""

from __future__ import annotations

import os
from pathlib import Path

from asr.recipe import copy_manifests

# Why `asr download` has nothing to fetch for this recipe.
NO_DOWNLOAD = "the recipe reads the JSON Lines layout of a prepared copy"
TRAIN = "train"  # split trained on
DEV = "test"  # split that ranks checkpoints during training
TESTS = ("test",)  # splits scored at the end


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Copy train.jsonl and test.jsonl to OUT_DIR with absolute audio paths; returns split -> manifest."""
    return copy_manifests(data_dir, out_dir, ("train", "test"), required=("train", "test"))
