"""`asr evaluate MODEL DATA`: decode a test set, print WER/CER and the real-time factor."""

from __future__ import annotations

import argparse
import json

from asr.commands._decoding import add_model_arguments, add_search_arguments, load_recognizer

HELP = "decode a manifest or shards with a model and score it (WER/CER, S/D/I, real-time factor)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr evaluate`."""
    parser.add_argument("model", help="model file (a checkpoint written by `asr train` or `asr average`)")
    parser.add_argument("data", help="JSON Lines manifest, shard index (*.index.jsonl), shard directory or URLs")
    parser.add_argument("--report", metavar="DIR",
                        help="write results.jsonl (per utterance, with word alignment), ref.trn, hyp.trn, summary.json")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--batch-seconds", type=float, default=100.0, help="padded seconds of audio per batch")
    parser.add_argument("--max-batch-size", type=int, default=None, help="utterances per batch at most")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--allow-missing", action="store_true",
                        help="exit 0 although some utterances could not be read; with a manifest they are "
                             "scored as deletions (as `asr score` does), with shards they are only counted")
    add_model_arguments(parser)
    add_search_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the summary (a line, or JSON with --json)."""
    from asr.errors import AsrError
    from asr.evaluate import evaluate
    from asr.files import output_folder
    from asr.reports import format_summary

    if args.report:
        output_folder(args.report, "--report")  # before decoding: a bad folder fails at once
    recognizer, options, lm = load_recognizer(args)
    summary = evaluate(recognizer, args.data, options, lm=lm, batch_seconds=args.batch_seconds,
                       max_batch_size=args.max_batch_size, report_dir=args.report, progress=not args.no_progress,
                       missing_as_deletions=args.allow_missing)
    print(json.dumps(summary, ensure_ascii=False) if args.json else format_summary(summary))
    if summary["missing"] and not args.allow_missing:
        of = f" of {summary['expected']}" if summary.get("expected") else ""
        raise AsrError(f"{args.data}: {summary['missing']}{of} utterances could not be read (warnings above) and "
                       "are not in the scores; --allow-missing accepts that")
    return 0
