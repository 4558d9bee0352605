"""Container and level check: do the words stay the same when the audio is re-encoded or its level changes?

    python tools/container_check.py MODEL.pt TEST.jsonl [--count 30] [--beam-size 1] [--json]

Takes `--count` utterances spread evenly over the manifest and writes each of them
again as 16-bit WAV (the reference), MP3, Ogg Vorbis, Ogg Opus, 8-bit WAV, at x0.01
of its level (16-bit) and x10 with clipping (16-bit), all with soundfile at the
file's own sample rate. Each version is transcribed with the model; the table gives,
per version, the utterances whose transcript equals the reference text and the WER.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

import asr
from asr.data.manifest import read_manifest
from asr.scoring import score_texts
from asr.search import DecodeOptions

# name -> (extension, soundfile format, subtype, level transform)
Version = tuple[str, str, str, Callable[[np.ndarray], np.ndarray]]
VERSIONS: dict[str, Version] = {
    "wav16": ("wav", "WAV", "PCM_16", lambda x: x),
    "mp3": ("mp3", "MP3", "MPEG_LAYER_III", lambda x: x),
    "ogg-vorbis": ("ogg", "OGG", "VORBIS", lambda x: x),
    "opus": ("opus", "OGG", "OPUS", lambda x: x),
    "wav8": ("wav", "WAV", "PCM_U8", lambda x: x),
    "x0.01": ("wav", "WAV", "PCM_16", lambda x: 0.01 * x),
    "x10-clipped": ("wav", "WAV", "PCM_16", lambda x: np.clip(10.0 * x, -1.0, 1.0)),
}


def spread(items: list, count: int) -> list:
    """`count` items taken at even steps through `items` (all of them if there are fewer)."""
    if count >= len(items):
        return items
    return [items[i * len(items) // count] for i in range(count)]


def write_versions(audio: Path, out: Path, stem: str) -> dict[str, Path]:
    """Every version of one audio file, written under `out`."""
    wave, rate = sf.read(audio, dtype="float64", always_2d=False)
    paths = {}
    for name, (ext, fmt, subtype, level) in VERSIONS.items():
        path = out / f"{stem}.{name}.{ext}"
        sf.write(path, level(wave), rate, format=fmt, subtype=subtype)
        paths[name] = path
    return paths


def check(model: str, manifest: str, count: int, options: DecodeOptions) -> list[dict]:
    """One row per version: correct utterances, WER and CER over the chosen utterances."""
    recognizer = asr.load_model(model)
    utts = spread(read_manifest(manifest), count)
    refs = [recognizer.tokenizer.normalize(u.text) for u in utts]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = [write_versions(Path(u.audio), Path(tmp), f"u{i}") for i, u in enumerate(utts)]
        for name in VERSIONS:
            hyps = recognizer.transcribe([f[name] for f in files], options=options)
            scores = score_texts(refs, hyps)
            rows.append({"version": name, "correct": sum(h == r for h, r in zip(hyps, refs)), "utterances": len(utts),
                         "wer": round(scores["wer"], 2), "cer": round(scores["cer"], 2)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model file")
    parser.add_argument("manifest", help="JSON Lines manifest of test utterances")
    parser.add_argument("--count", type=int, default=30, help="utterances taken evenly from the manifest")
    parser.add_argument("--beam-size", type=int, default=1, help="beam size (1 = greedy)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    rows = check(args.model, args.manifest, args.count, DecodeOptions(beam_size=args.beam_size))
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'version':<12} {'correct':>9} {'WER %':>7} {'CER %':>7}")
    for r in rows:
        print(f"{r['version']:<12} {r['correct']:>4} / {r['utterances']:<3} {r['wer']:>7.2f} {r['cer']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
