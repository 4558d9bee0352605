"""LibriSpeech from its own layout: LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
with one <speaker>-<chapter>.trans.txt per chapter (`ID TEXT` lines, upper case).

Training uses train-clean-100, or every train subset present (train-clean-100, train-clean-360,
train-other-500: the 960 h set) as chosen by `subsets`. Texts are lowercased.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from asr.recipe import RecipeError, utterances_from_files, write_splits

TRAIN = "train"  # the chosen train-* subsets together
DEV = "dev-clean"  # split that ranks checkpoints during training
TESTS = ("test-clean", "test-other", "dev-other")  # splits scored at the end (those present)
TRAIN_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500")  # all of them: 960 h
EVAL_SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other")


def corpus_root(data_dir: str | os.PathLike) -> Path:
    """The LibriSpeech/ folder: DATA_DIR itself or DATA_DIR/LibriSpeech."""
    data = Path(data_dir)
    return data / "LibriSpeech" if (data / "LibriSpeech").is_dir() else data


def read_subset(folder: Path) -> list:
    """Utterances of one subset folder, sorted by id, from its *.trans.txt files."""
    rows = []
    for trans in sorted(folder.glob("*/*/*.trans.txt")):
        for line_no, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{uid}.flac"
            if not audio.is_file():
                raise RecipeError(f"{trans}:{line_no}: no audio file {audio.name} for {uid}")
            rows.append((uid, audio, text.strip().lower(), uid.split("-")[0]))
    if not rows:
        raise RecipeError(f"{folder}: no <speaker>/<chapter>/*.trans.txt files")
    return utterances_from_files(rows)


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
            subsets: Sequence[str] | str | None = None) -> dict[str, Path]:
    """Manifests train, dev-clean and the dev/test subsets present; `subsets` picks the training subsets
    ("960" = all three; None = every train-* subset present)."""
    root = corpus_root(data_dir)
    if subsets == "960":
        subsets = TRAIN_SUBSETS
    elif subsets is None:
        subsets = [s for s in TRAIN_SUBSETS if (root / s).is_dir()] or ["train-clean-100"]
    elif isinstance(subsets, str):
        subsets = [subsets]
    missing = [s for s in [*subsets, DEV] if not (root / s).is_dir()]
    if missing:
        raise RecipeError(f"{root}: no {', '.join(missing)} folder (expected LibriSpeech/<subset>/...)")
    splits = {TRAIN: [u for s in subsets for u in read_subset(root / s)]}
    for subset in EVAL_SUBSETS:
        if (root / subset).is_dir():
            splits[subset] = read_subset(root / subset)
    return write_splits(splits, out_dir)
