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
    """Validate, print the report on stdout; 0 when clean, else an error naming the first fault."""
    import math

    from asr.data.validate import FAULT_KINDS, validate_manifest
    from asr.errors import AsrError
    from asr.files import file_problem
    from asr.text import CharTokenizer

    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise AsrError(f"--tolerance must be a finite number of seconds >= 0, got {args.tolerance}")
    if args.jobs is not None and args.jobs < 1:
        raise AsrError(f"--jobs must be at least 1, got {args.jobs}")
    if args.max_ids < 0:
        raise AsrError(f"--max-ids must be >= 0, got {args.max_ids}")
    if args.vocab:
        problem = file_problem(args.vocab, "vocabulary file")
        if problem is not None:
            raise AsrError(f"--vocab {args.vocab}: {problem}")
    tokenizer = CharTokenizer.load(args.vocab) if args.vocab else None
    report = validate_manifest(
        args.manifest, tokenizer=tokenizer, tolerance=args.tolerance, jobs=args.jobs, progress=not args.no_progress
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.format_text(max_ids=args.max_ids))
    if report.ok:
        return 0
    counts = ", ".join(f"{len(faults)} {kind}" for kind, faults in report.by_kind().items())
    first = next(f for kind in FAULT_KINDS for f in report.faults if f.kind == kind)
    raise AsrError(f"{args.manifest}: {len(report.faults)} fault(s) in {report.utterances} utterances ({counts}); "
                   f"first: {first.kind} {first.id}: {first.detail}")
