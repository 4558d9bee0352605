"""`asr vocab MANIFEST... --out vocab.txt`: the character vocabulary of the manifests' texts."""

from __future__ import annotations

import argparse

HELP = "build a character vocabulary file from manifests"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr vocab`."""
    parser.add_argument("manifests", nargs="+", help="JSON Lines manifests")
    parser.add_argument("--out", required=True, help="vocabulary file to write")
    parser.add_argument("--keep-case", action="store_true", help="do not lowercase")
    parser.add_argument("--keep-punctuation", action="store_true", help="do not strip punctuation")


def run(args: argparse.Namespace) -> int:
    """Build the vocabulary from every text and write it; print a one-line summary."""
    from asr.data.manifest import read_manifest
    from asr.text import RESERVED, CharTokenizer, NormalizerConfig

    normalizer = NormalizerConfig(lowercase=not args.keep_case, strip_punctuation=not args.keep_punctuation)
    texts = [u.text for path in args.manifests for u in read_manifest(path)]
    tokenizer = CharTokenizer.from_texts(texts, normalizer=normalizer)
    tokenizer.save(args.out)
    chars = "".join(tokenizer.symbols[len(RESERVED):])
    print(f"wrote {len(tokenizer)} symbols ({len(texts)} texts, characters {chars!r}) -> {args.out}")
    return 0
