#!/usr/bin/env python3
"""Training speed on a CUDA GPU with bf16 autocast: the peers' standard workload, then real shards.

Usage (from the repository root):

    python bench/gpu_train.py [--steps 300] [--shards DIR --vocab FILE] [--config YAML] [--json]

Part 1 times forward + backward + clipping + Adam on the standard workload (model of the peers'
size, features in). Part 2 trains the model of --config (front-end included) from shards through
the streaming loader. Each prints step time, seconds of audio per second and peak GPU memory.
Without a CUDA device it says so and exits 0 (CPU runs: bench/train_step.py); --device cpu forces
a CPU run of the same code, for checking the script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from standard import DEFAULT_PEERS_DIR, import_workload, standard_las, workload_batch  # noqa: E402

FRAME_SHIFT_S = 0.01  # the workload's features are 10 ms frames


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="timed steps per part")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per part")
    ap.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16", help="autocast precision")
    ap.add_argument("--peers-dir", default=str(DEFAULT_PEERS_DIR), help="folder holding the peers' workload.py")
    ap.add_argument("--shards", help="training shards for part 2 (folder, index file or pattern); skipped if absent")
    ap.add_argument("--vocab", help="vocabulary file for part 2 (asr vocab)")
    ap.add_argument("--config", default=str(REPO / "recipes" / "speechocean762" / "conf" / "las.yaml"),
                    help="training config whose front-end, model and loader part 2 uses")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu to check the script")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return ap.parse_args()


def timed_steps(step, warmup: int, steps: int, sync) -> list[float]:
    """Wall time of each of `steps` calls of `step()` after `warmup` untimed ones."""
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step(i)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def make_update(model, optimizer, scaler, amp_dtype, device, forward):
    """One training update: autocast forward, scaled backward, clipping at 5, optimizer step."""
    import torch

    def update(batch) -> None:
        with torch.autocast(device.type, amp_dtype, enabled=amp_dtype is not None):
            loss = forward(batch)["loss"]
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return update


def summary(name: str, times: list[float], audio_s: float, device) -> dict:
    import torch

    peak = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None
    return {"part": name, "steps": len(times), "step_median_s": statistics.median(times),
            "step_mean_s": statistics.fmean(times), "audio_s_per_s": audio_s / sum(times),
            "peak_gpu_mb": peak}


def main() -> int:
    args = parse_args()
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_train: no CUDA device here, nothing to measure (CPU speed: bench/train_step.py)", file=sys.stderr)
        return 0
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results: list[dict] = []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if not args.json:  # rows print as each part ends, so a cut-short run still shows the finished ones
        print(f"device: {name}, autocast {args.amp}")
        print(f"{'part':40s} {'steps':>6s} {'median s':>9s} {'audio s/s':>10s} {'peak GPU MB':>12s}", flush=True)

    def report(row: dict) -> None:
        results.append(row)
        if not args.json:
            print(f"{row['part']:40s} {row['steps']:6d} {row['step_median_s']:9.4f} {row['audio_s_per_s']:10.1f} "
                  f"{row['peak_gpu_mb'] if row['peak_gpu_mb'] is not None else '-':>12}", flush=True)

    # Part 1: the standard workload, features in.
    W = import_workload(args.peers_dir)
    torch.manual_seed(W.SEED)
    model = standard_las(W).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    _, batch = workload_batch(W, device)
    update = make_update(model, optimizer, scaler, amp_dtype, device, lambda b: model.forward_features(*b))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = timed_steps(lambda i: update(batch), args.warmup, args.steps, sync)
    report(summary("standard workload", times, float(batch[1].sum()) * FRAME_SHIFT_S * len(times), device))

    # Part 2: real shards through the loader, front-end on the GPU.
    if args.shards:
        from asr.config import load_config
        from asr.data.loader import make_loader
        from asr.recognizer import build_model, load_tokenizer
        from asr.train import ExperimentConfig

        cfg = load_config(ExperimentConfig, args.config, [f"data.train={args.shards}"])
        tokenizer = load_tokenizer(args.vocab, args.shards, cfg.text)
        model = build_model(cfg.frontend, cfg.model, tokenizer).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loader = make_loader(args.shards, cfg.data.loader, tokenizer=tokenizer, rank=0, world_size=1,
                             pin_memory=device.type == "cuda")
        update = make_update(model, optimizer, scaler, amp_dtype, device, lambda b: model(*b))
        batches, audio = _endless(loader, device), [0.0]

        def real_step(i: int) -> None:
            b = next(batches)
            if i >= args.warmup:
                audio[0] += float(b.wave_lengths.sum()) / cfg.frontend.features.sample_rate
            update((b.waves, b.wave_lengths, b.targets, b.target_lengths))

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = timed_steps(real_step, args.warmup, args.steps, sync)
        report(summary(f"shards ({Path(args.config).parent.parent.name} config)", times, audio[0], device))

    if args.json:
        print(json.dumps({"device": name, "amp": args.amp, "results": results}))
    return 0


def _endless(loader, device):
    """Batches on `device`, epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for batch in loader:
            yield batch.to(device, non_blocking=True)
        epoch += 1


if __name__ == "__main__":
    sys.exit(main())
