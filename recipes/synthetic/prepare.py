"""The synthetic read-speech corpus written by `asr synth` (train.jsonl, test.jsonl, audio/), optionally with real speech.

The test split is spoken by voices never heard in training and ranks checkpoints. With
`real=FOLDER` (a JSON Lines corpus holding train.jsonl and dev.jsonl, such as speechocean762),
its training utterances join the synthetic ones and its dev split is scored as "real-dev".
"""

from __future__ import annotations

import os
from pathlib import Path

from asr.recipe import RecipeError, join_training, write_splits

TRAIN = "train"  # split trained on (synthetic, plus the real corpus's train split when given)
DEV = "test"  # held-out voices: rank checkpoints during training
TESTS = ("test", "real-dev")  # splits scored at the end (real-dev only with a real corpus)


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
            real: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write train/test manifests with absolute audio paths (and real-dev when `real` is given); returns split -> manifest."""
    from asr.data.manifest import read_manifest

    data = Path(data_dir)
    for name in ("train.jsonl", "test.jsonl"):
        if not (data / name).is_file():
            raise RecipeError(f"{data}: no {name} (make the corpus with `asr synth --out {data}`)")
    splits = {"train": read_manifest(data / "train.jsonl"), "test": read_manifest(data / "test.jsonl")}
    if real is not None:
        real = Path(real)
        for name in ("train.jsonl", "dev.jsonl"):
            if not (real / name).is_file():
                raise RecipeError(f"{real}: no {name} (the real corpus needs train.jsonl and dev.jsonl)")
        splits["train"] = join_training(splits["train"], [real / "train.jsonl"])
        splits["real-dev"] = read_manifest(real / "dev.jsonl")
    return write_splits(splits, out_dir)
