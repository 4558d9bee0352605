"""The `asr` command: one subcommand per module in `asr.commands`.

Each command module defines `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`, and imports heavy libraries inside `run` only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from asr.errors import AsrError

# Subcommand -> module, in the order `asr --help` lists them. Command modules import only
# the standard library at their top, so listing their HELP lines stays fast.
COMMANDS: dict[str, str] = {
    "validate": "asr.commands.validate",
    "shard": "asr.commands.shard",
    "import-kaldi": "asr.commands.import_kaldi",
    "vocab": "asr.commands.vocab",
    "train": "asr.commands.train",
    "average": "asr.commands.average",
    "lm-text": "asr.commands.lm_text",
    "train-lm": "asr.commands.train_lm",
    "score": "asr.commands.score",
    "evaluate": "asr.commands.evaluate",
    "transcribe": "asr.commands.transcribe",
    "plot-attention": "asr.commands.plot_attention",
    "synth": "asr.commands.synth",
    "download": "asr.commands.download",
    "recipe": "asr.commands.recipe",
    "demo": "asr.commands.demo",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; subcommand parsers are filled in on demand."""
    parser = argparse.ArgumentParser(prog="asr", description="Listen, Attend and Spell speech recognition toolkit.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        help_text = importlib.import_module(module).HELP
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `asr` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    known, rest = parser.parse_known_args(argv)
    if known.command is None:
        parser.print_help()
        return 0 if not rest else 2
    module = importlib.import_module(COMMANDS[known.command])
    sub = argparse.ArgumentParser(prog=f"asr {known.command}", description=module.HELP)
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    logging.basicConfig(
        level=logging.DEBUG if known.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(module.run(args) or 0)
    except AsrError as err:
        print(f"asr {known.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"asr {known.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
