"""`asr plot-attention MODEL AUDIO --out PNG`: where the speller looks, output step by encoder frame."""

from __future__ import annotations

import argparse

from asr.commands._decoding import add_model_arguments, add_search_arguments, load_recognizer

HELP = "plot the attention of one utterance (teacher-forced on --text, else along the decoded hypothesis) as a PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr plot-attention`."""
    parser.add_argument("model", help="model file (a checkpoint written by `asr train` or `asr average`)")
    parser.add_argument("audio", help="audio file of one utterance (any format, rate, channel count)")
    parser.add_argument("--text", help="reference transcript to feed the speller (default: the decoded hypothesis)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    add_model_arguments(parser)
    add_search_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Decode (unless --text), feed the tokens to the speller, plot its attention weights."""
    import math
    from pathlib import Path

    from asr.audio import load_audio
    from asr.errors import AsrError
    from asr.files import output_file
    from asr.plots import plot_attention
    from asr.text import OOVError

    output_file(args.out, "--out")
    recognizer, options, lm = load_recognizer(args)
    wave = load_audio(args.audio, recognizer.sample_rate)
    if args.text is not None:
        try:
            tokens = recognizer.tokenizer.encode(args.text)
        except OOVError as err:
            shown = ", ".join(repr(c) for c in err.chars)
            raise AsrError(f"--text holds characters that are not in the model's vocabulary: {shown}") from None
        what = "reference"
    else:
        nbest = recognizer.decode(wave.unsqueeze(0), wave.new_tensor([wave.shape[0]]).long(), options, lm)
        tokens, what = nbest[0][0].tokens, "hypothesis"
    weights = recognizer.attention(wave, tokens)
    model_cfg = recognizer.model
    shift = model_cfg.frontend.cfg.features.frame_shift_ms / 1000.0 * math.prod(model_cfg.listener.cfg.reduce)
    title = f"{Path(args.audio).name} ({what}): {recognizer.tokenizer.decode(tokens)}"
    print(plot_attention([weights.numpy()], [title], args.out, frame_shift_s=shift))
    return 0
