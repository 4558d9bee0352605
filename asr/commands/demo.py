"""`asr demo`: synthesise a corpus, train a small LAS in a time budget, score held-out voices, transcribe a file."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "the main job: synthetic corpus -> small LAS trained in a time budget -> WER/CER on unseen voices"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr demo` (defaults from DemoOptions)."""
    from asr.demo import DemoOptions

    d = DemoOptions()
    parser.add_argument("--out", default=str(d.out),
                        help=f"folder for the corpus, the run, model.pt and results (default {d.out})")
    parser.add_argument("--minutes", type=float, default=d.minutes,
                        help=f"training wall-time budget in minutes (default {d.minutes:g})")
    parser.add_argument("--sentences", type=int, default=d.sentences,
                        help=f"synthetic sentences, one voice each (default {d.sentences})")
    parser.add_argument("--data", default=None,
                        help="real JSON Lines corpus (train.jsonl, dev.jsonl): added to training, its dev scored")
    parser.add_argument("--jobs", type=int, default=d.jobs, help=f"synthesis processes (default {d.jobs})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the synthetic recipe's config, e.g. model.listener.hidden=64")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print the scores, one transcript beside its reference, and where the outputs are."""
    import math

    from asr.demo import DemoOptions, format_result, run_demo
    from asr.errors import AsrError
    from asr.files import output_folder

    # Checked here, before minutes of synthesis, rather than by the training config afterwards.
    if not 0 < args.minutes < math.inf:
        raise AsrError(f"--minutes {args.minutes}: give a positive number of minutes")
    if args.sentences < 1 or args.jobs < 1:
        raise AsrError(f"--sentences {args.sentences} and --jobs {args.jobs}: give 1 or more")
    output_folder(args.out, "--out")
    result = run_demo(DemoOptions(out=Path(args.out), minutes=args.minutes, sentences=args.sentences,
                                  data=Path(args.data) if args.data else None, jobs=args.jobs,
                                  overrides=tuple(args.overrides), progress=not args.no_progress))
    print(format_result(result), end="")
    return 0
