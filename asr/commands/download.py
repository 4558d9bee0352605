"""`asr download NAME --out DIR [--parts ...]`: the opt-in download of a public corpus for its recipe."""

from __future__ import annotations

import argparse

HELP = "download, check and unpack a public corpus for its recipe (opt-in; resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr download`."""
    parser.add_argument("name", help="recipe name whose corpus is public, e.g. librispeech, an4")
    parser.add_argument("--out", required=True, help="folder to unpack into; then pass it to `asr recipe --data`")
    parser.add_argument("--parts", help="comma-separated parts (default: the recipe's DEFAULT_PARTS); "
                                        "`--parts list` prints them")
    parser.add_argument("--keep-archives", action="store_true", help="keep the archives after unpacking")
    parser.add_argument("--recipes-dir", default=None, help="folder of recipes (default: recipes/ beside the package)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Fetch the parts and print the corpus folder."""
    from pathlib import Path

    from asr.download import DownloadError, download_corpus
    from asr.recipe import load_recipe

    _, module = load_recipe(args.name, Path(args.recipes_dir) if args.recipes_dir else None)
    downloads = getattr(module, "DOWNLOADS", None)
    if not downloads:
        reason = getattr(module, "NO_DOWNLOAD", "its corpus has no public download")
        raise DownloadError(f"recipe {args.name}: nothing to download ({reason})")
    if args.parts == "list":
        for name, archive in downloads.items():
            print(f"{name}\t{archive.url}")
        return 0
    parts = args.parts.split(",") if args.parts else list(module.DEFAULT_PARTS)
    print(download_corpus(downloads, parts, args.out, progress=not args.no_progress,
                          keep_archives=args.keep_archives))
    return 0
