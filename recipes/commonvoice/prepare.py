"""Common Voice (English) from its release layout: cv-corpus-*/en/{train,dev,test}.tsv and clips/*.mp3.

The tsv columns used are `client_id` (speaker), `path` (clip file name) and `sentence`; durations
come from the mp3 headers (libsndfile >= 1.1 reads MP3). Texts are kept as written; the config's
text normaliser lowercases them and strips punctuation.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from asr.recipe import RecipeError, utterances_from_files, write_splits

# Why `asr download` has nothing to fetch for this recipe.
NO_DOWNLOAD = "Common Voice is downloaded from its website after accepting its terms"
TRAIN = "train"  # split trained on
DEV = "dev"  # split that ranks checkpoints during training
TESTS = ("test",)  # splits scored at the end
LANGUAGE = "en"


def language_dir(data_dir: str | os.PathLike, language: str = LANGUAGE) -> Path:
    """The folder holding train.tsv: DATA_DIR, DATA_DIR/<lang> or DATA_DIR/cv-corpus-*/<lang> (newest)."""
    data = Path(data_dir)
    for candidate in [data, data / language, *sorted(data.glob(f"cv-corpus-*/{language}"), reverse=True)]:
        if (candidate / "train.tsv").is_file():
            return candidate
    raise RecipeError(f"{data}: no train.tsv (expected cv-corpus-*/{language}/train.tsv)")


def read_tsv(path: Path, clips: Path) -> list:
    """Utterances of one Common Voice tsv; the id is the clip's file name without extension."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"client_id", "path", "sentence"} - set(reader.fieldnames or [])
        if missing:
            raise RecipeError(f"{path}: no column(s) {', '.join(sorted(missing))}")
        for line_no, row in enumerate(reader, 2):
            text = (row["sentence"] or "").strip()
            if not text:
                continue
            audio = clips / row["path"]
            if not audio.is_file():
                raise RecipeError(f"{path}:{line_no}: no clip {audio}")
            rows.append((Path(row["path"]).stem, audio, text, row["client_id"]))
    return utterances_from_files(rows)


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike, language: str = LANGUAGE) -> dict[str, Path]:
    """Manifests train, dev and test from the tsv files; returns split -> manifest."""
    folder = language_dir(data_dir, language)
    return write_splits({split: read_tsv(folder / f"{split}.tsv", folder / "clips")
                         for split in (TRAIN, DEV, *TESTS)}, out_dir)
