"""Long-file check: transcribe a ~30-minute recording made of dev utterances, against decoding them one by one.

    python tools/long_audio_check.py MODEL.pt DEV.jsonl [--minutes 30] [--json] [--beam-size 10 ...]

Builds (streaming, never holding it whole) a 16 kHz WAV of the manifest's
utterances in order, cycling when needed, with 0.5-3 s of low noise (-60 dBFS)
before each and after the last, and records where each utterance starts and ends.
Then, in this process:

1. transcribes it through the long-file path (asr.transcribe: energy segmenter,
   segments read one at a time, batched decoding), measuring wall time and the
   peak resident memory (resource.getrusage; also the level before, after loading
   the model);
2. decodes the same utterances one by one (each file whole, batched);
3. reports the WER of both against the concatenated references (one long word
   sequence each, so both are scored the same way), and the segment timestamp
   errors: each true utterance is matched to the segment overlapping it most
   (else the nearest one), and |segment start - utterance start|, |end - end| are
   summarised (max, mean); the "span" errors use instead the first and last
   segments overlapping the utterance, which is what matters when a pause inside
   an utterance split it.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from asr.audio import SAMPLE_RATE, load_audio
from asr.data.manifest import Utterance, read_manifest
from asr.scoring import align, count

NOISE_STD = 1e-3  # std of the noise between utterances (-60 dBFS)
GAP_RANGE_S = (0.5, 3.0)  # silence before each utterance, uniform


@dataclass(frozen=True)
class Placed:
    """Where an utterance was put in the long recording."""

    id: str
    text: str  # normalised reference
    start: float  # seconds
    end: float  # seconds


def build_long_audio(utterances: list[Utterance], path: Path, minutes: float, rng: random.Random,
                     normalize=lambda t: t) -> list[Placed]:
    """Write utterances (cycling) separated by noise gaps until `minutes` is reached; returns their places."""
    placed: list[Placed] = []
    noise = np.random.default_rng(rng.randrange(2**32))
    pos = 0  # samples written

    def gap(out: sf.SoundFile) -> None:
        nonlocal pos
        n = int(rng.uniform(*GAP_RANGE_S) * SAMPLE_RATE)
        out.write((noise.standard_normal(n) * NOISE_STD).astype(np.float32))
        pos += n

    with sf.SoundFile(path, "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16") as out:
        i = 0
        while pos < minutes * 60 * SAMPLE_RATE:
            utt = utterances[i % len(utterances)]
            i += 1
            gap(out)
            wave = load_audio(utt.audio, SAMPLE_RATE, offset=utt.offset, duration=utt.duration if utt.offset else None)
            out.write(wave.numpy())
            placed.append(Placed(utt.id, normalize(utt.text), pos / SAMPLE_RATE, (pos + wave.shape[0]) / SAMPLE_RATE))
            pos += wave.shape[0]
        gap(out)
    return placed


def word_error_rate(ref: str, hyp: str) -> float:
    """WER in percent of one long hypothesis against one long reference (sclite's alignment)."""
    return count(align(ref.split(), hyp.split())).rate  # words only: a character alignment of 30 min is too big


def timestamp_errors(truth: list[Placed], segments: list[tuple[float, float]]) -> dict[str, float | int]:
    """Start/end errors of the best-overlapping (else nearest) segment of each utterance, and of the span
    of all segments overlapping it (max and mean over utterances, seconds), and the share of utterances
    whose span starts and ends within 0.5 s of theirs."""
    if not segments:
        return {"matched": 0, "unmatched": len(truth)}
    starts = np.array([s for s, _ in segments])
    ends = np.array([e for _, e in segments])
    best_s, best_e, span_s, span_e, unmatched = [], [], [], [], 0
    for utt in truth:
        overlap = np.minimum(ends, utt.end) - np.maximum(starts, utt.start)
        if overlap.max() > 0:
            j = int(np.argmax(overlap))
            hit = np.flatnonzero(overlap > 0)
            span_s.append(abs(starts[hit[0]] - utt.start))
            span_e.append(abs(ends[hit[-1]] - utt.end))
        else:
            unmatched += 1
            j = int(np.argmin(np.abs((starts + ends) / 2 - (utt.start + utt.end) / 2)))
        best_s.append(abs(starts[j] - utt.start))
        best_e.append(abs(ends[j] - utt.end))

    def stats(name: str, values: list[float]) -> dict[str, float]:
        v = np.array(values) if values else np.zeros(1)
        return {f"{name}_max": round(float(v.max()), 3), f"{name}_mean": round(float(v.mean()), 3)}

    within = [max(s, e) <= 0.5 for s, e in zip(span_s, span_e)]
    return {**stats("start_error", best_s), **stats("end_error", best_e), **stats("span_start_error", span_s),
            **stats("span_end_error", span_e), "span_within_0.5s": round(float(np.mean(within)) if within else 0.0, 3),
            "matched": len(truth) - unmatched, "unmatched": unmatched}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def check(args: argparse.Namespace) -> dict:
    """Build the long file, transcribe it both ways, and return the measurements."""
    import torch

    from asr.commands._decoding import load_recognizer
    from asr.commands.transcribe import segmenter_config
    from asr.transcribe import TranscribeOptions, transcribe_files

    recognizer, decode, lm = load_recognizer(args)
    utterances = read_manifest(args.manifest)
    if not utterances:
        raise SystemExit(f"{args.manifest}: no utterances")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep_audio) if args.keep_audio else Path(tmp) / "long.wav"
        truth = build_long_audio(utterances, path, args.minutes, rng, recognizer.tokenizer.normalize)
        audio_seconds = sf.info(str(path)).duration
        rss_before = peak_rss_mb()
        options = TranscribeOptions(segmenter=segmenter_config(args), batch_seconds=args.batch_seconds)
        start = time.perf_counter()
        [long] = list(transcribe_files(recognizer, [path], options, decode, lm))
        long_seconds = time.perf_counter() - start
        rss_peak = peak_rss_mb()
    if long.error:
        raise SystemExit(f"long file failed: {long.error}")
    sources = {u.id: u for u in utterances}
    one_by_one = TranscribeOptions(whole_file_s=float("inf"), batch_seconds=args.batch_seconds)
    pieces = [sources[p.id].audio for p in truth]
    start = time.perf_counter()
    singles = [t.text for t in transcribe_files(recognizer, pieces, one_by_one, decode, lm)]
    single_seconds = time.perf_counter() - start
    reference = " ".join(p.text for p in truth)
    wer_long = word_error_rate(reference, long.text)
    wer_single = word_error_rate(reference, " ".join(singles))
    return {
        "minutes": round(audio_seconds / 60, 2), "utterances": len(truth), "segments": len(long.segments),
        "device": str(recognizer.device), "threads": torch.get_num_threads(),
        "rss_before_mb": round(rss_before, 1), "peak_rss_mb": round(rss_peak, 1),
        "waveform_float32_mb": round(audio_seconds * SAMPLE_RATE * 4 / 2**20, 1),
        "wer_long": round(wer_long, 2), "wer_one_by_one": round(wer_single, 2),
        "wer_difference": round(wer_long - wer_single, 2),
        "rtf_long": round(long_seconds / audio_seconds, 4),
        "rtf_one_by_one": round(single_seconds / sum(p.end - p.start for p in truth), 4),
        **timestamp_errors(truth, [(s.start, s.end) for s in long.segments]),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (the decoding ones are `asr evaluate`'s)."""
    from asr.commands._decoding import add_model_arguments, add_search_arguments
    from asr.commands.transcribe import add_segmenter_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model file")
    parser.add_argument("manifest", help="dev manifest whose utterances make the long file")
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the long file (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the gaps")
    parser.add_argument("--batch-seconds", type=float, default=160.0, help="padded seconds decoded together")
    parser.add_argument("--keep-audio", metavar="WAV", help="write the long file there and keep it")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_segmenter_arguments(parser)
    add_model_arguments(parser)
    add_search_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the check and print the measurements."""
    args = parse_args(argv)
    result = check(args)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
