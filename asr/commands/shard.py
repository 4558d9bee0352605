"""`asr shard MANIFEST --out DIR --shard-size N`: WebDataset tar shards plus an index."""

from __future__ import annotations

import argparse

HELP = "write a manifest as WebDataset tar shards with an index"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr shard`."""
    parser.add_argument("manifest", help="JSON Lines manifest")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--shard-size", type=int, required=True, help="utterances per shard")
    parser.add_argument("--order", choices=("shuffle", "sorted"), default="shuffle",
                        help="shuffle with --seed (default) or sort by duration")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    parser.add_argument("--prefix", default="train", help="shard names PREFIX-000000.tar ... (default train)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Write the shards and the index; print a one-line summary."""
    from asr.data.manifest import read_manifest
    from asr.data.shards import INDEX_SUFFIX, write_shards

    utterances = read_manifest(args.manifest)
    index = write_shards(
        utterances, args.out, shard_size=args.shard_size, order=args.order, seed=args.seed,
        prefix=args.prefix, progress=not args.no_progress,
    )
    print(f"wrote {len(index.shards)} shards, {index.utterances} utterances, {index.seconds / 3600:.2f} h "
          f"-> {args.out}/{args.prefix}{INDEX_SUFFIX}")
    return 0
