"""`asr train-lm TEXT_FILE... --vocab VOCAB --out lm.pt [--eval-text FILE] [--set key=value]`: character LM
for shallow fusion."""

from __future__ import annotations

import argparse
import json

HELP = "train a character RNN language model (for shallow fusion in beam search)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr train-lm`."""
    parser.add_argument("texts", nargs="+", help="text files, one sentence per line (or .jsonl manifests)")
    parser.add_argument("--vocab", required=True, help="the recognizer's vocabulary file (asr vocab)")
    parser.add_argument("--out", required=True, help="LM file to write")
    parser.add_argument("--eval-text", dest="eval_texts", action="append", default=[], metavar="FILE",
                        help="also report the per-character perplexity of this text or .jsonl manifest, e.g. the "
                             "dev transcripts (repeatable: one figure over all)")
    parser.add_argument("--config", help="YAML file of LMConfig values (optional)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set epochs=10 --set model.hidden=256 "
                             "--set max_minutes=30 --set eval_every=2000 (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


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
    summary = train_lm(cfg, args.texts, args.vocab, args.out, eval_texts=args.eval_texts,
                       progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"held-out perplexity {summary['dev_perplexity']:.3f} per character (uniform: "
          f"{summary['uniform_perplexity']}), {summary['train_lines']} training lines, {summary['updates']} updates "
          f"({summary['epochs']} epochs, stopped by {summary['stopped']}), {summary['seconds']} s -> {args.out}")
    if "eval_perplexity" in summary:
        print(f"eval-text perplexity {summary['eval_perplexity']:.3f} per character "
              f"({summary['eval_lines']} lines of {', '.join(summary['eval_texts'])})")
    return 0
