"""`asr import-kaldi DIR --out manifest.jsonl`: a Kaldi data directory as a manifest."""

from __future__ import annotations

import argparse

HELP = "turn a Kaldi data directory into a JSON Lines manifest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr import-kaldi`."""
    parser.add_argument("dir", help="Kaldi data directory (wav.scp, text, optional segments and utt2spk)")
    parser.add_argument("--out", required=True, help="manifest to write")
    parser.add_argument("--root", default=None,
                        help="folder that relative wav.scp paths start from (default: the current folder)")


def run(args: argparse.Namespace) -> int:
    """Import and write the manifest; print a one-line summary."""
    from asr.data.kaldi import import_kaldi_dir
    from asr.data.manifest import write_manifest

    utterances = import_kaldi_dir(args.dir, root=args.root)
    count = write_manifest(utterances, args.out)
    hours = sum(u.duration for u in utterances) / 3600
    print(f"wrote {count} utterances ({hours:.2f} h) -> {args.out}")
    return 0
