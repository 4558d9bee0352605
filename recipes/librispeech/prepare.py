"""LibriSpeech from its own layout: LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
with one <speaker>-<chapter>.trans.txt per chapter (`ID TEXT` lines, upper case).

Training uses train-clean-100, or every train subset present (train-clean-100, train-clean-360,
train-other-500: the 960 h set) as chosen by `subsets`. Texts are lowercased.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from asr.download import Archive
from asr.recipe import RecipeError, utterances_from_files, write_splits

TRAIN = "train"  # the chosen train-* subsets together
DEV = "dev-clean"  # split that ranks checkpoints during training
TESTS = ("test-clean", "test-other", "dev-other")  # splits scored at the end (those present)
TRAIN_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500")  # all of them: 960 h
EVAL_SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other")

# `asr download librispeech --out DIR [--parts ...]` (OpenSLR 12; SHA-256 as published with torchaudio).
_OPENSLR = "https://www.openslr.org/resources/12/"
DOWNLOADS = {name: Archive(f"{_OPENSLR}{name}.tar.gz", sha) for name, sha in {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}.items()}
DEFAULT_PARTS = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")  # 100 h + eval


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
