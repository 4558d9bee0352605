"""Options shared by the commands that decode (evaluate, transcribe, plot-attention); not a command itself."""

from __future__ import annotations

import argparse
from typing import Any


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --dtype and --threads."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="precision of the encoder and decoder (the features and scores stay float32); "
                             "bfloat16 is faster on GPUs and on CPUs with bf16 instructions")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """The fields of asr.search.DecodeOptions, and the language model file."""
    group = parser.add_argument_group("search")
    group.add_argument("--decoder", choices=["attention", "ctc"], default="attention",
                       help="decode with the attention speller, or with the CTC head alone (best path, or "
                            "prefix beam search with --beam-size > 1)")
    group.add_argument("--beam-size", type=int, default=1, help="hypotheses kept per utterance (1 = greedy)")
    group.add_argument("--ctc-weight", type=float, default=0.0,
                       help="weight of CTC prefix scores in [0, 1] (needs a model with a CTC head; 0.3 is usual)")
    group.add_argument("--lm", metavar="LM.pt", help="character language model written by `asr train-lm`")
    group.add_argument("--lm-weight", type=float, default=None,
                       help="shallow fusion weight of --lm (default 0.3 with --lm)")
    group.add_argument("--length-penalty", type=float, default=0.0, help="score added per output token")
    group.add_argument("--length-normalize", action="store_true", help="rank hypotheses by score per token")
    group.add_argument("--eos-threshold", type=float, default=1.5,
                       help="[EOS] only when its log-prob exceeds this times the best other token's (0 = always)")
    group.add_argument("--min-len-ratio", type=float, default=0.0, help="min output tokens per encoder frame")
    group.add_argument("--max-len-ratio", type=float, default=1.0, help="max output tokens per encoder frame")
    group.add_argument("--attention-guard", action="store_true",
                       help="end hypotheses whose attention stalls or jumps back")
    group.add_argument("--ctc-fallback", type=float, default=0.0, metavar="MARGIN",
                       help="use the CTC head's best path for an utterance whose attention hypothesis the "
                            "guard stopped or whose length differs from CTC's by more than MARGIN x its "
                            "length + 2 (flagged in results.jsonl; 0 = off)")


# Float options of the search that must be finite numbers (argparse's float() accepts nan and inf).
FINITE_SEARCH_OPTIONS = ("ctc_weight", "lm_weight", "length_penalty", "eos_threshold", "min_len_ratio",
                         "max_len_ratio", "ctc_fallback")


def require_finite(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """AsrError naming the first option of `names` given as nan or inf."""
    import math

    from asr.errors import AsrError

    for name in names:
        value = getattr(args, name, None)
        if value is not None and not math.isfinite(value):
            raise AsrError(f"--{name.replace('_', '-')} {value}: not a finite number")


def decode_options(args: argparse.Namespace) -> Any:
    """DecodeOptions from the parsed search arguments."""
    from asr.search import DecodeOptions

    require_finite(args, FINITE_SEARCH_OPTIONS)
    lm_weight = args.lm_weight if args.lm_weight is not None else (0.3 if args.lm else 0.0)
    return DecodeOptions(decoder=args.decoder, ctc_fallback=args.ctc_fallback, beam_size=args.beam_size,
                         ctc_weight=args.ctc_weight, lm_weight=lm_weight, length_penalty=args.length_penalty,
                         length_normalize=args.length_normalize,
                         eos_threshold=args.eos_threshold, min_len_ratio=args.min_len_ratio,
                         max_len_ratio=args.max_len_ratio, attention_guard=args.attention_guard)


def load_recognizer(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(recognizer, decode options, language model or None) from the parsed arguments."""
    import torch

    from asr.distributed import resolve_device
    from asr.errors import AsrError
    from asr.recognizer import load_model

    if args.threads is not None and args.threads < 1:
        raise AsrError(f"--threads {args.threads}: give 1 or more (or leave it out for torch's choice)")
    device = resolve_device(args.device, what="--device")
    options = decode_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    recognizer = load_model(args.model, device=device, dtype=args.dtype)
    lm = recognizer.load_lm(args.lm) if args.lm and options.lm_weight > 0 else None
    return recognizer, options, lm
