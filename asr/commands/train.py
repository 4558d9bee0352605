"""`asr train CONFIG.yaml [--set key=value ...]`: train a model (alone or under torchrun)."""

from __future__ import annotations

import argparse

HELP = "train a LAS model from a YAML config (single process, or under torchrun for DDP)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML file holding values only (see recipes/*/conf)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=5e-4 (repeatable)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="resume", action="store_true", default=None,
                       help="require a checkpoint in the run directory and continue from it")
    group.add_argument("--no-resume", dest="resume", action="store_false",
                       help="start afresh even if the run directory holds last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (the JSON Lines log is kept)")


def run(args: argparse.Namespace) -> int:
    """Train; a SIGTERM stops at the next update with a checkpoint, and the status is 128 + 15."""
    import sys

    from asr.config import load_config
    from asr.train import ExperimentConfig, TrainingStopped, fit

    cfg = load_config(ExperimentConfig, args.config, args.overrides)
    try:
        run_dir = fit(cfg, resume=args.resume, progress=not args.no_progress)
    except TrainingStopped as stopped:
        print(f"asr train: {stopped}", file=sys.stderr)
        return 128 + stopped.signum
    print(run_dir)
    return 0
