"""`asr average CKPT... --out MODEL.pt`: average the weights of several checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "average checkpoints (or a run directory's best ones) into one model file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="checkpoint files, or a run directory (its best-step*.pt)")
    parser.add_argument("--out", required=True, help="model file to write")
    parser.add_argument("--best", type=int, default=0, help="with a run directory: use only the N best (0 = all kept)")


def run(args: argparse.Namespace) -> int:
    from asr.checkpoint import CheckpointError, average_checkpoints, best_checkpoints
    from asr.files import output_file

    output_file(args.out, "--out")  # before reading the checkpoints: a bad target fails at once
    paths: list[Path] = []
    for item in map(Path, args.inputs):
        paths += best_checkpoints(item, args.best) if item.is_dir() else [item]
    if not paths:
        raise CheckpointError(f"no checkpoints found in {', '.join(args.inputs)}")
    average_checkpoints(paths, args.out)
    print(args.out)
    return 0
