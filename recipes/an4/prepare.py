"""CMU AN4 (alphanumeric census utterances) from CMU's layout.

    an4/etc/an4_train.transcription, an4/etc/an4_test.transcription  (`<s> TEXT </s> (file-id)` lines)
    an4/wav/an4_clstk/<speaker>/<file-id>.raw|.sph, an4/wav/an4test_clstk/<speaker>/<file-id>.raw|.sph

Both distributions work: in the sphere one (.sph, NIST SPHERE headers) the files are used as
they are; the raw one (.raw: 16 kHz, 16-bit, big-endian, no header, which libsndfile cannot
identify by itself) is converted to FLAC under OUT_DIR/audio. AN4 has no dev set: the training
speakers whose sorted position is a multiple of 10 are held out as `dev`. Texts are lowercased.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import soundfile as sf

from asr.download import Archive
from asr.recipe import RecipeError, utterances_from_files, write_splits

TRAIN = "train"  # training speakers, less the held-out ones
DEV = "dev"  # every 10th training speaker (sorted by name): ranks checkpoints
TESTS = ("test",)  # the an4test_clstk speakers
RAW_RATE = 16000  # Hz, of the headerless .raw files
DEV_EVERY = 10  # one training speaker in DEV_EVERY goes to dev
# `asr download an4 --out DIR`: CMU publishes no checksum, so the archive is checked by unpacking it.
DOWNLOADS = {"sphere": Archive("http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz"),
             "raw": Archive("http://www.speech.cs.cmu.edu/databases/an4/an4_raw.bigendian.tar.gz")}
DEFAULT_PARTS = ("sphere",)
LINE = re.compile(r"^(?P<text>.*)\((?P<id>[^()\s]+)\)\s*$")


def corpus_root(data_dir: str | os.PathLike) -> Path:
    """The an4/ folder: DATA_DIR/an4 or DATA_DIR itself."""
    data = Path(data_dir)
    root = data / "an4" if (data / "an4" / "etc").is_dir() else data
    if not (root / "etc").is_dir() or not (root / "wav").is_dir():
        raise RecipeError(f"{data}: no an4/etc and an4/wav folders (CMU's AN4 layout)")
    return root


def read_transcription(path: Path) -> list[tuple[str, str]]:
    """(file id, lowercased text) of each line, without the <s> </s> markers."""
    out = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        match = LINE.match(line.strip())
        if match is None:
            raise RecipeError(f"{path}:{line_no}: expected `<s> TEXT </s> (file-id)`, got {line.strip()!r}")
        words = [w for w in match["text"].split() if w.lower() not in ("<s>", "</s>")]
        out.append((match["id"], " ".join(words).lower()))
    return out


def audio_files(wav: Path) -> dict[str, Path]:
    """File id -> audio file under wav/ (.sph preferred over .raw)."""
    files: dict[str, Path] = {}
    for ext in ("raw", "sph"):
        files.update({p.stem: p for p in wav.glob(f"*/*/*.{ext}")})
    return files


def readable(path: Path, out_audio: Path) -> Path:
    """A file libsndfile can open: .sph as it is, .raw converted once to FLAC under `out_audio`."""
    if path.suffix != ".raw":
        return path
    flac = out_audio / path.parent.name / f"{path.stem}.flac"
    if not flac.exists():
        samples, _ = sf.read(path, samplerate=RAW_RATE, channels=1, format="RAW", subtype="PCM_16",
                             endian="BIG", dtype="int16")
        flac.parent.mkdir(parents=True, exist_ok=True)
        sf.write(flac, samples, RAW_RATE, subtype="PCM_16")
    return flac


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Manifests train, dev and test; returns split -> manifest."""
    root, out = corpus_root(data_dir), Path(out_dir)
    files = audio_files(root / "wav")
    splits: dict[str, list] = {}
    for name, split in (("an4_train", TRAIN), ("an4_test", "test")):
        trans = root / "etc" / f"{name}.transcription"
        if not trans.is_file():
            raise RecipeError(f"{trans}: no such transcription file")
        rows = []
        for uid, text in read_transcription(trans):
            if uid not in files:
                raise RecipeError(f"{trans}: no audio file {uid}.raw or {uid}.sph under {root / 'wav'}")
            path = files[uid]
            rows.append((uid, readable(path, out / "audio"), text, path.parent.name))
        splits[split] = utterances_from_files(rows)
    speakers = sorted({u.speaker for u in splits[TRAIN]})
    held_out = set(speakers[::DEV_EVERY])
    splits[DEV] = [u for u in splits[TRAIN] if u.speaker in held_out]
    splits[TRAIN] = [u for u in splits[TRAIN] if u.speaker not in held_out]
    return write_splits(splits, out)
