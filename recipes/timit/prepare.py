"""TIMIT from the user's licensed copy: TIMIT/{TRAIN,TEST}/<DR>/<SPEAKER>/<SENTENCE>.WAV (NIST SPHERE)
with <SENTENCE>.TXT (`start end text`). Folder and file names may be upper or lower case.

Splits: `test` is the standard core test set (24 speakers, SI and SX sentences, 192 utterances),
`test-complete` every TEST speaker, `dev` the TRAIN speakers whose position in (dialect region,
speaker) order is a multiple of 10 (about 46 speakers), `train` the other TRAIN speakers. The SA
sentences, read by every speaker, are left out as usual. Texts are lowercased and stripped of
punctuation (apostrophes kept).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from asr.recipe import RecipeError, utterances_from_files, write_splits

# Why `asr download` has nothing to fetch for this recipe.
NO_DOWNLOAD = "TIMIT is licensed by the LDC: use your own copy"
TRAIN = "train"  # TRAIN speakers less the held-out ones
DEV = "dev"  # held-out TRAIN speakers: ranks checkpoints
TESTS = ("test", "test-complete")  # core test set, complete test set
DEV_EVERY = 10  # one TRAIN speaker in DEV_EVERY goes to dev
CORE_TEST_SPEAKERS = frozenset({  # the core test set: 2 male and 1 female speaker per dialect region
    "MDAB0", "MWBT0", "FELC0", "MTAS1", "MWEW0", "FPAS0", "MJMP0", "MLNT0", "FPKT0", "MLLL0", "MTLS0", "FJLM0",
    "MBPM0", "MKLT0", "FNLP0", "MCMJ0", "MJDH0", "FMGD0", "MGRT0", "MNJM0", "FDHC0", "MJLN0", "MPAM0", "FMLD0",
})
NOT_TEXT = re.compile(r"[^a-z0-9' ]+")


def corpus_root(data_dir: str | os.PathLike) -> Path:
    """The folder holding TRAIN/ and TEST/ (any case): DATA_DIR or a folder up to two levels below."""
    data = Path(data_dir)
    for candidate in [data, *sorted(data.glob("*")), *sorted(data.glob("*/*"))]:
        if candidate.is_dir() and _child(candidate, "train") and _child(candidate, "test"):
            return candidate
    raise RecipeError(f"{data}: no TIMIT folder with TRAIN/ and TEST/")


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder of `folder` called `name` in any case, or None."""
    return next((p for p in folder.iterdir() if p.is_dir() and p.name.lower() == name), None)


def clean_text(line: str) -> str:
    """The words of a .TXT line (`start end text`), lowercased, without punctuation."""
    parts = line.split(maxsplit=2)
    text = parts[2] if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() else line
    return " ".join(NOT_TEXT.sub(" ", text.lower().replace("-", " ")).split())


def read_part(folder: Path) -> list:
    """Utterances of TRAIN/ or TEST/ (SA sentences left out), sorted by dialect region, speaker, sentence."""
    rows = []
    for wav in sorted(folder.glob("*/*/*")):
        if wav.suffix.lower() != ".wav" or "." in wav.stem or wav.stem.upper().startswith("SA"):
            continue
        txt = next((p for p in (wav.with_suffix(".TXT"), wav.with_suffix(".txt")) if p.is_file()), None)
        if txt is None:
            raise RecipeError(f"{wav}: no transcript {wav.stem}.TXT beside it")
        speaker, dialect = wav.parent.name.upper(), wav.parent.parent.name.upper()
        rows.append((f"{speaker}_{wav.stem.upper()}", wav, clean_text(txt.read_text(encoding="utf-8").strip()),
                     speaker, dialect))
    if not rows:
        raise RecipeError(f"{folder}: no <DR>/<SPEAKER>/<SENTENCE>.WAV files")
    utterances = utterances_from_files([r[:4] for r in rows])
    return [u for _, u in sorted(zip(rows, utterances), key=lambda pair: (pair[0][4], pair[0][3], pair[0][0]))]


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Manifests train, dev, test (core) and test-complete; returns split -> manifest."""
    root = corpus_root(data_dir)
    train, test = read_part(_child(root, "train")), read_part(_child(root, "test"))
    speakers = list(dict.fromkeys(u.speaker for u in train))  # in (dialect region, speaker) order
    held_out = set(speakers[::DEV_EVERY])
    return write_splits({
        TRAIN: [u for u in train if u.speaker not in held_out],
        DEV: [u for u in train if u.speaker in held_out],
        "test": [u for u in test if u.speaker in CORE_TEST_SPEAKERS],
        "test-complete": test,
    }, out_dir)
