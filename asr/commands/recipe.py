"""`asr recipe NAME --data PATH --out DIR`: prepare, train, average and evaluate one corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from asr.recipe import STAGES

HELP = f"run a corpus recipe ({', '.join(STAGES)}); resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr recipe`."""
    parser.add_argument("name", help="recipe name, e.g. fsdd, speechocean762, librispeech, an4, commonvoice, timit")
    parser.add_argument("--data", required=True, help="the corpus folder, in the corpus's own layout")
    parser.add_argument("--out", required=True, help="folder for manifests, shards, the run, model.pt and results")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the recipe's config, e.g. train.epochs=5 (repeatable)")
    parser.add_argument("--stage", default=None,
                        help=f"restart from this stage ({', '.join(STAGES)}); default: after the last finished one")
    parser.add_argument("--config", default=None, help="experiment config (default: the recipe's conf/las.yaml)")
    parser.add_argument("--recipes-dir", default=None, help="folder of recipes (default: recipes/ beside the package)")
    parser.add_argument("--shard-size", type=int, default=1000, help="utterances per training shard (default 1000)")
    parser.add_argument("--average", type=int, default=3, help="best checkpoints averaged into model.pt (default 3)")
    parser.add_argument("--add-train", action="append", default=[], metavar="MANIFEST",
                        help="JSON Lines manifest whose utterances join the training split, e.g. a synthetic "
                             "corpus's train.jsonl (repeatable; applied by the prepare stage)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the recipe's remaining stages and print the results table."""
    from asr.recipe import RecipeOptions, run_recipe

    options = RecipeOptions(
        name=args.name, data=Path(args.data), out=Path(args.out), overrides=tuple(args.overrides), stage=args.stage,
        recipes_dir=Path(args.recipes_dir) if args.recipes_dir else None,
        config=Path(args.config) if args.config else None, shard_size=args.shard_size,
        average_best=args.average, progress=not args.no_progress,
        add_train=tuple(Path(p) for p in args.add_train))
    run_recipe(options)
    print((options.out / "results.md").read_text(encoding="utf-8"), end="")
    return 0
