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
    from asr.errors import AsrError
    from asr.files import output_problem
    from asr.text import RESERVED, CharTokenizer, NormalizerConfig

    problem = output_problem(args.out, "vocabulary file")
    if problem is not None:
        raise AsrError(f"--out {args.out}: {problem}; not written over")
    normalizer = NormalizerConfig(lowercase=not args.keep_case, strip_punctuation=not args.keep_punctuation)
    texts = [u.text for path in args.manifests for u in read_manifest(path)]
    tokenizer = CharTokenizer.from_texts(texts, normalizer=normalizer)
    if len(tokenizer) == len(RESERVED):
        raise AsrError(f"{', '.join(args.manifests)}: no characters: every transcript is empty after normalisation")
    try:
        tokenizer.save(args.out)
    except OSError as err:
        raise AsrError(f"--out {args.out}: cannot write the vocabulary: {err.strerror or err}") from None
    chars = "".join(tokenizer.symbols[len(RESERVED):])
    print(f"wrote {len(tokenizer)} symbols ({len(texts)} texts, characters {chars!r}) -> {args.out}")
    return 0
