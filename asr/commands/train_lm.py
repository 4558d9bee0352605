"""`asr train-lm TEXT_FILE... --vocab VOCAB --out lm.pt [--set key=value]`: character LM for shallow fusion."""

from __future__ import annotations

import argparse

HELP = "train a character RNN language model (for shallow fusion in beam search)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr train-lm`."""
    parser.add_argument("texts", nargs="+", help="text files, one sentence per line (or .jsonl manifests)")
    parser.add_argument("--vocab", required=True, help="the recognizer's vocabulary file (asr vocab)")
    parser.add_argument("--out", required=True, help="LM file to write")
    parser.add_argument("--config", help="YAML file of LMConfig values (optional)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set epochs=10 --set model.hidden=256 (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Train, write the LM file and print the held-out perplexity."""
    from asr.config import ConfigError, apply_overrides, from_dict, load_config
    from asr.lm_train import LMConfig, train_lm

    if args.config:
        cfg = load_config(LMConfig, args.config, args.overrides)
    else:
        try:
            cfg = from_dict(LMConfig, apply_overrides({}, args.overrides))
        except ConfigError as err:
            raise ConfigError(f"--set: {err}") from None
    summary = train_lm(cfg, args.texts, args.vocab, args.out)
    print(f"held-out perplexity {summary['dev_perplexity']:.3f} per character (uniform: "
          f"{summary['uniform_perplexity']}), {summary['train_lines']} training lines, "
          f"{summary['seconds']} s -> {args.out}")
    return 0
