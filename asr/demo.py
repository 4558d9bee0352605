"""The main job: synthesise a corpus, train a small LAS within a time budget, score it and transcribe a file.

Everything lands under one folder:

    OUT/corpus/        the synthetic corpus (asr synth), reused when already complete
    OUT/model.pt       the averaged model; OUT/exp/ the run (logs, checkpoints, exp/plots)
    OUT/results.md     WER/CER per test set and search (also OUT/results.json, OUT/eval/)

It is the `synthetic` recipe run with `train.max_minutes`, so an interrupted demo goes on
where it stopped when run again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """What the demo builds, how long it trains and where it writes."""

    out: Path = Path("demo")  # everything goes under this folder
    minutes: float = 20.0  # training wall-time budget (train.max_minutes)
    # Synthetic sentences, each read by one voice of its split: 4000 (~3.4 h) keep a 20-minute CPU
    # run from overfitting (with 1200, ~1 h, dev loss bottoms out after ~8 minutes).
    sentences: int = 4000
    data: Path | None = None  # optional real JSON Lines corpus (train.jsonl, dev.jsonl) added to training and scored
    jobs: int = 2  # synthesis processes
    overrides: tuple[str, ...] = ()  # extra `key=value` overrides of the recipe's config (after the demo's own)
    progress: bool = True  # progress bars on stderr


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced: scores, paths and one transcribed held-out file."""

    results: dict[str, Any]  # results.json of the recipe
    model: Path  # the averaged model
    plots: Path  # learning curve and attention plots
    report: Path  # results table (markdown)
    sample_audio: Path  # the held-out file transcribed
    sample_reference: str  # its transcript
    sample_hypothesis: str  # what the model heard


def corpus_complete(folder: Path) -> bool:
    """True when `asr synth` finished writing `folder` (LICENSE.md is written last)."""
    return all((folder / name).is_file() for name in ("train.jsonl", "test.jsonl", "LICENSE.md"))


def run_demo(options: DemoOptions) -> DemoResult:
    """Build the corpus (unless present), run the synthetic recipe with the time budget, transcribe one test file."""
    from asr.data.manifest import read_manifest
    from asr.recipe import RecipeOptions, run_recipe
    from asr.recognizer import load_model
    from asr.synth.corpus import CorpusOptions, build_corpus

    out = Path(options.out)
    corpus = out / "corpus"
    if corpus_complete(corpus):
        log.info("synthetic corpus: %s is complete, reused", corpus)
    else:
        log.info("synthetic corpus: %d sentences into %s", options.sentences, corpus)
        summary = build_corpus(corpus, CorpusOptions(sentences=options.sentences, voices_per_sentence=1,
                                                     jobs=options.jobs), progress=options.progress)
        log.info("synthetic corpus: %s utterances, %s hours", summary.counts,
                 {k: round(v, 3) for k, v in summary.hours.items()})
    overrides = (f"train.max_minutes={options.minutes}", "train.epochs=100000", *options.overrides)
    extra = {"real": str(Path(options.data).resolve())} if options.data is not None else {}
    results = run_recipe(RecipeOptions(name="synthetic", data=corpus, out=out, overrides=overrides,
                                       progress=options.progress, extra=extra))
    model = out / "model.pt"
    sample = read_manifest(out / "data" / "test.jsonl")[0]
    recognizer = load_model(model, device="auto")
    hypothesis = recognizer.transcribe([sample.audio])[0]
    return DemoResult(results=results, model=model, plots=out / "exp" / "plots", report=out / "results.md",
                      sample_audio=Path(sample.audio), sample_reference=sample.text, sample_hypothesis=hypothesis)


def format_result(result: DemoResult) -> str:
    """The lines the demo prints: WER/CER per test set and search, the sample, and where things are."""
    lines = []
    for split, searches in result.results["tests"].items():
        for search, s in searches.items():
            lines.append(f"{split} {search}: WER {s['wer']:.2f}% CER {s['cer']:.2f}% ({s['utterances']} utterances)")
    lines += [f"file:       {result.sample_audio}", f"reference:  {result.sample_reference}",
              f"hypothesis: {result.sample_hypothesis}",
              f"model:      {result.model}", f"plots:      {result.plots}", f"report:     {result.report}"]
    return "\n".join(lines) + "\n"
