"""`asr synth --out DIR`: a synthetic read-speech corpus spoken by offline TTS voices."""

from __future__ import annotations

import argparse

HELP = "synthesise a read-speech corpus (offline TTS voices, split by voice) with manifests"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr synth`."""
    parser.add_argument("--out", required=True, help="output folder (train.jsonl, test.jsonl, audio/, LICENSE.md)")
    parser.add_argument("--sentences", type=int, default=1000, help="distinct sentences, shared between splits (default 1000)")
    parser.add_argument("--voices", help="comma-separated ENGINE:NAME training voices (default: a built-in set)")
    parser.add_argument("--test-voices", help="comma-separated held-out voices, never in training ('' for none)")
    parser.add_argument("--voices-per-sentence", type=int, default=None,
                        help="voices reading each sentence (default: every voice of its split)")
    parser.add_argument("--sources", help="comma-separated text sources: web, wordnet, gcide, devil (default: installed)")
    parser.add_argument("--noise-snr", type=float, default=None, help="add white noise to training audio at this SNR (dB)")
    parser.add_argument("--reverb", type=float, default=0.0, help="probability of reverberating a training utterance")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="synthesis processes (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the corpus and print what was written."""
    from asr.synth.corpus import CorpusOptions, build_corpus
    from asr.synth.voices import parse_voices

    options = CorpusOptions(sentences=args.sentences, noise_snr=args.noise_snr, reverb=args.reverb, seed=args.seed,
                            jobs=args.jobs, voices_per_sentence=args.voices_per_sentence)
    overrides = {}
    if args.voices is not None:
        overrides["train_voices"] = tuple(v.spec for v in parse_voices(args.voices))
    if args.test_voices is not None:
        overrides["test_voices"] = tuple(v.spec for v in parse_voices(args.test_voices))
    if args.sources is not None:
        overrides["sources"] = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    if overrides:
        import dataclasses

        options = dataclasses.replace(options, **overrides)
    summary = build_corpus(args.out, options, progress=not args.no_progress)
    for split, count in summary.counts.items():
        print(f"{summary.out / (split + '.jsonl')}: {count} utterances, {summary.hours[split]:.3f} h")
    print(f"sentences per source: {summary.sources}")
    if summary.failed:
        print(f"{len(summary.failed)} utterances failed to synthesise: {', '.join(summary.failed[:10])}")
    return 0
