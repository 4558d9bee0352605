"""`asr lm-text --out FILE [--exclude MANIFEST...]`: normalised English text for `asr train-lm`."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "write normalised English text for the language model from installed Debian packages"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr lm-text`."""
    parser.add_argument("--out", required=True, help="text file to write (one sentence per line)")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="MANIFEST",
                        help="JSON Lines manifests whose 'text' fields are left out (e.g. dev and test sets)")
    parser.add_argument("--sources", help="comma-separated sources to read, in the fixed order (default: all; "
                                          "web, wordnet, gcide, devil, wordnet-definitions, gcide-text, fortunes)")
    parser.add_argument("--path", dest="paths", action="append", default=[], metavar="SOURCE=PATH",
                        help="read a source from another file or folder (repeatable)")
    parser.add_argument("--max-words", type=int, default=None,
                        help="longer sentences are cut into pieces of at most this many words (default 60)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args: argparse.Namespace) -> int:
    """Build the text, print a reason for each skipped source (stderr) and the summary (stdout)."""
    from asr.lm_text import MAX_WORDS, LMTextError, build_lm_text, format_summary, select_sources

    paths = {}
    for item in args.paths:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise LMTextError(f"--path {item!r} is not of the form SOURCE=PATH")
        paths[name] = path
    names = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources is not None else None
    sources = select_sources(names, paths)
    summary = build_lm_text(args.out, sources, exclude=args.exclude,
                            max_words=MAX_WORDS if args.max_words is None else args.max_words,
                            warn=lambda name, reason: print(f"skipping {name}: {reason}", file=sys.stderr))
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0
