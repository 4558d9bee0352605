"""Throughput of the feature front-end against per-utterance reference implementations.

    python bench/features.py [--seconds 120] [--repeats 3] [--threads 1,2] [--batch 16] [--json]

Speech comes from speechocean762 (utterances of 2-15 s, in manifest order) when the
data folder is present ($ASR_TEST_DATA, else ../shared/data beside the checkout, or
--data-dir), else synthetic noise of random lengths in 2-15 s. Throughput is seconds
of audio per second of wall time (best of --repeats rounds that interleave the methods)
and per second of process CPU time, which is steadier when the machine is shared.
torch's thread count applies to the torch rows; the librosa row gets the same BLAS
thread limit; kaldi-native-fbank is single-threaded. The table goes to stdout,
progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asr.audio import SAMPLE_RATE, load_audio  # noqa: E402
from asr.features import Fbank, FeatureConfig, LibrosaMel  # noqa: E402

log = logging.getLogger("bench.features")
N_MELS = 80


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=120.0, help="seconds of audio to process per run (default 120)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds over all rows after a warm-up; the best is reported (default 3)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    p.add_argument("--batch", type=int, default=16, help="utterances per batch for the batched rows (default 16)")
    p.add_argument("--data-dir", type=Path, default=None, help="folder holding speechocean762/ (default: the test data)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return p.parse_args(argv)


def load_speech(data_dir: Path | None, seconds: float) -> tuple[list[torch.Tensor], str]:
    """Utterances of 2-15 s adding up to `seconds`: real speech when available, else noise."""
    folder = (data_dir or Path(os.environ.get("ASR_TEST_DATA", REPO.parent / "shared" / "data"))) / "speechocean762"
    waves: list[torch.Tensor] = []
    if (folder / "train.jsonl").is_file():
        for line in (folder / "train.jsonl").read_text().splitlines():
            utt = json.loads(line)
            if 2.0 <= utt["duration"] <= 15.0:
                waves.append(load_audio(folder / utt["audio"]))
                if sum(len(w) for w in waves) >= seconds * SAMPLE_RATE:
                    return waves, f"speechocean762 ({folder})"
        log.info("only %.1f s of speech found; padding with noise", sum(len(w) for w in waves) / SAMPLE_RATE)
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    while sum(len(w) for w in waves) < seconds * SAMPLE_RATE:
        waves.append(torch.randn(int(rng.uniform(2.0, 15.0) * SAMPLE_RATE), generator=gen) * 0.1)
    return waves, "synthetic noise" if not (folder / "train.jsonl").is_file() else f"speechocean762 + noise ({folder})"


def pad(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return batch, lengths


def methods(waves: list[torch.Tensor], batch_size: int) -> dict[str, Callable[[], object]]:
    """Name -> function that computes features for all of `waves`."""
    import librosa
    import torchaudio.compliance.kaldi as kaldi

    batches = [pad(waves[i : i + batch_size]) for i in range(0, len(waves), batch_size)]
    fbank, lmel = Fbank(FeatureConfig(n_mels=N_MELS)).eval(), LibrosaMel(FeatureConfig(kind="librosa_mel", n_mels=N_MELS)).eval()
    singles = [(w[None], torch.tensor([len(w)])) for w in waves]
    arrays = [w.numpy() for w in waves]
    out: dict[str, Callable[[], object]] = {
        f"ours Fbank, batches of {batch_size}": lambda: [fbank(b, n) for b, n in batches],
        "ours Fbank, one utterance at a time": lambda: [fbank(b, n) for b, n in singles],
        "torchaudio kaldi.fbank, per utterance": lambda: [kaldi.fbank(w[None] * 32768, num_mel_bins=N_MELS) for w in waves],
    }
    try:
        import kaldi_native_fbank as knf

        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0.0
        opts.mel_opts.num_bins = N_MELS
        int16 = [a * 32768 for a in arrays]

        def knf_loop() -> list[np.ndarray]:
            feats = []
            for a in int16:
                f = knf.OnlineFbank(opts)
                f.accept_waveform(SAMPLE_RATE, a)
                f.input_finished()
                feats.append(np.stack([f.get_frame(i) for i in range(f.num_frames_ready)]))
            return feats

        out["kaldi-native-fbank, per utterance"] = knf_loop
    except ImportError:
        log.info("kaldi_native_fbank is not installed; skipping it")
    out[f"ours LibrosaMel, batches of {batch_size}"] = lambda: [lmel(b, n) for b, n in batches]
    out["librosa melspectrogram, per utterance"] = lambda: [
        np.log(librosa.feature.melspectrogram(y=a, sr=SAMPLE_RATE, n_fft=512, hop_length=160, win_length=400, n_mels=N_MELS, fmin=20.0) + 1e-6)
        for a in arrays
    ]
    return out


def run(args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()[0]
    waves, source = load_speech(args.data_dir, args.seconds)
    audio = sum(len(w) for w in waves) / SAMPLE_RATE
    log.info("%d utterances, %.1f s of audio from %s", len(waves), audio, source)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # librosa's BLAS then uses its default thread count
        threadpool_limits = None
    rows = []
    with torch.inference_mode():
        table = methods(waves, args.batch)
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            limit = threadpool_limits(limits=threads) if threadpool_limits is not None else None  # BLAS, OpenMP
            wall = {name: float("inf") for name in table}
            cpu = dict(wall)
            # Rounds over all methods, so that a burst of load elsewhere does not hit one row only.
            for repeat in range(args.repeats + 1):  # round 0 warms up
                for name, fn in table.items():
                    log.info("%s, %d thread(s), round %d...", name, threads, repeat)
                    w0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    if repeat:
                        wall[name] = min(wall[name], time.perf_counter() - w0)
                        cpu[name] = min(cpu[name], time.process_time() - c0)
            if limit is not None:
                limit.restore_original_limits()
            for name in table:
                rows.append({"method": name, "threads": threads, "wall_s": wall[name], "cpu_s": cpu[name],
                             "x_realtime": audio / wall[name], "x_realtime_cpu": audio / cpu[name]})
    for row in rows:
        ref = next(r for r in rows if r["threads"] == row["threads"] and r["method"].startswith("torchaudio"))
        row["vs_torchaudio"] = ref["wall_s"] / row["wall_s"]
        row["vs_torchaudio_cpu"] = ref["cpu_s"] / row["cpu_s"]
    return {"audio_seconds": audio, "utterances": len(waves), "source": source, "batch": args.batch,
            "repeats": args.repeats, "load_average": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count(),
            "torch": torch.__version__, "rows": rows}


def print_table(result: dict) -> None:
    print(f"{result['audio_seconds']:.1f} s of audio in {result['utterances']} utterances ({result['source']}); "
          f"best of {result['repeats']}; load average before/after {result['load_average'][0]:.2f}/{result['load_average'][1]:.2f} on {result['cpus']} CPUs")
    if max(result["load_average"]) > 0.5:
        print(f"note: load average {max(result['load_average']):.2f} on {result['cpus']} CPUs: other processes shared "
              "the CPUs, so these numbers are noisy (the 2-thread rows most: threads wait on each other)")
    print(f"{'method':40} {'threads':>7} {'x real-time':>12} {'vs torchaudio':>14} {'x per CPU-s':>12} {'vs t.a. (CPU)':>14}")
    for r in result["rows"]:
        print(f"{r['method']:40} {r['threads']:>7} {r['x_realtime']:>12.0f} {r['vs_torchaudio']:>13.2f}x"
              f" {r['x_realtime_cpu']:>12.0f} {r['vs_torchaudio_cpu']:>13.2f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
