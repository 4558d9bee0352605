"""`asr score REF HYP`: WER/CER of two transcript files (sclite .trn or Kaldi `id text`), as sclite counts.

Utterances are matched by id; a reference without a hypothesis is scored against an
empty one (with a warning), a hypothesis id missing from the references is an error.
Words are compared exactly, case included, as `sctk sclite -s` does (asr.scoring
explains the alignment); sclite's markup for optionally deleted words, alternations
and fragments is not interpreted.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "WER/CER of a hypothesis transcript file against a reference one (sclite .trn or Kaldi text), as sclite counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr score`."""
    parser.add_argument("ref", help="reference transcripts: 'text (id)' lines (.trn) or 'id text' lines")
    parser.add_argument("hyp", help="hypothesis transcripts, same choice of formats; matched to REF by id")
    parser.add_argument("--format", choices=("auto", "trn", "kaldi"), default="auto",
                        help="format of both files (default: detected per file)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (the shape of `asr evaluate --json`)")
    parser.add_argument("--report", metavar="DIR",
                        help="also write results.jsonl, ref.trn, hyp.trn, summary.json there")


def run(args: argparse.Namespace) -> int:
    """Print the summary; 0 unless a file is unreadable or HYP holds ids that REF lacks."""
    from asr.files import output_folder
    from asr.reports import UtteranceResult, corpus_summary, format_summary, pair_transcripts, read_transcripts
    from asr.scoring import score_utterance

    if args.report:
        output_folder(args.report, "--report")  # an existing file or unwritable folder fails before any work
    refs = read_transcripts(args.ref, args.format)
    hyps = read_transcripts(args.hyp, args.format)
    ids, ref_texts, hyp_texts, missing = pair_transcripts(refs, hyps, hyp_name=args.hyp, ref_name=args.ref)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        print(f"asr score: warning: {len(missing)} reference utterance(s) without a hypothesis, scored as empty: "
              f"{shown}", file=sys.stderr)
    results = [UtteranceResult(uid, r, h, score_utterance(r, h)) for uid, r, h in zip(ids, ref_texts, hyp_texts)]
    summary = corpus_summary(results, missing=len(missing))
    if args.report:
        from asr.reports import write_report

        write_report(args.report, results, summary)
    print(json.dumps(summary, ensure_ascii=False) if args.json else format_summary(summary))
    return 0
