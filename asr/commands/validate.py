"""`asr validate MANIFEST`: report every fault of a manifest; non-zero exit when any."""

from __future__ import annotations

import argparse
import json

HELP = "check a manifest: missing/unreadable audio, empty text, durations, OOV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr validate`."""
    parser.add_argument("manifest", help="JSON Lines manifest")
    parser.add_argument("--vocab", help="vocabulary file: also report characters outside it")
    parser.add_argument("--json", action="store_true", help="print the full report (every id) as JSON")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed duration difference, seconds (default 0.05)")
    parser.add_argument("--max-ids", type=int, default=10, help="ids listed per fault kind in the text report")
    parser.add_argument("--jobs", type=int, default=None, help="decoding threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Validate, print the report on stdout; 0 when clean, 1 when faults were found."""
    from asr.data.validate import validate_manifest
    from asr.text import CharTokenizer

    tokenizer = CharTokenizer.load(args.vocab) if args.vocab else None
    report = validate_manifest(
        args.manifest, tokenizer=tokenizer, tolerance=args.tolerance, jobs=args.jobs, progress=not args.no_progress
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.format_text(max_ids=args.max_ids))
    return 0 if report.ok else 1
