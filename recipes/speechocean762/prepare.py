"""speechocean762 in the JSON Lines layout: train.jsonl (+ train_more.jsonl), dev.jsonl (unseen speakers), audio/.

train.jsonl and train_more.jsonl together are the corpus's whole train split (2,500 utterances,
2.9 h); both are trained on when present. The dev split ranks checkpoints and is also the split
scored at the end; a test.jsonl, when the folder has one, is scored too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from asr.recipe import copy_manifests, join_training, write_splits

log = logging.getLogger(__name__)

# Why `asr download` has nothing to fetch for this recipe.
NO_DOWNLOAD = "the recipe reads the JSON Lines layout of a prepared copy"
TRAIN = "train"  # split trained on
DEV = "dev"  # split that ranks checkpoints during training
TESTS = ("dev", "test")  # splits scored at the end (test only when present)
MORE_TRAIN = "train_more.jsonl"  # the rest of the corpus's train split, joined to train when present


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, more_train: bool = True) -> dict[str, Path]:
    """Copy train.jsonl (joined with train_more.jsonl unless `more_train` is False), dev.jsonl and
    test.jsonl if present, with absolute audio paths; returns split -> manifest."""
    written = copy_manifests(data_dir, out_dir, ("train", "dev", "test"), required=("train", "dev"))
    extra = Path(data_dir) / MORE_TRAIN
    if more_train and extra.is_file():
        from asr.data.manifest import read_manifest

        train = join_training(read_manifest(written[TRAIN]), [extra])
        written.update(write_splits({TRAIN: train}, out_dir))
        log.info("train: %d utterances with %s", len(train), extra)
    elif more_train:
        log.warning("%s: no %s; training on train.jsonl alone", data_dir, MORE_TRAIN)
    return written
