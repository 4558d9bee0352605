"""`asr transcribe MODEL FILE...`: transcripts of audio files of any length, as text, JSON, SRT or WebVTT."""

from __future__ import annotations

import argparse
import sys

from asr.commands._decoding import add_model_arguments, add_search_arguments, load_recognizer

HELP = "transcribe audio files of any length, rate and channel count (text, json, srt or vtt)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `asr transcribe`."""
    parser.add_argument("model", help="model file (a checkpoint written by `asr train` or `asr average`)")
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files (any format libsndfile reads)")
    parser.add_argument("--format", choices=("txt", "json", "srt", "vtt"), default="txt",
                        help="txt: the text (with several files: FILE<TAB>text lines); json: one object per file "
                             "with timed segments; srt/vtt: subtitles (default: txt)")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="write one NAME.FORMAT file per input there instead of printing (needed for "
                             "srt/vtt with several files)")
    parser.add_argument("--batch-seconds", type=float, default=160.0, help="padded seconds of audio decoded together")
    seg = parser.add_argument_group("segmentation of long files")
    seg.add_argument("--max-segment", type=float, default=20.0,
                     help="longest segment decoded at once, seconds; longer files are cut by the energy detector")
    seg.add_argument("--min-silence", type=float, default=0.5, help="shortest pause that ends a segment, seconds")
    seg.add_argument("--vad-threshold", type=float, default=12.0, help="dB above the noise floor where speech starts")
    add_model_arguments(parser)
    add_search_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Transcribe every file; a file that fails is one error line on stderr, and the exit status is 1."""
    from pathlib import Path

    from asr.errors import AsrError
    from asr.segment import SegmenterConfig
    from asr.transcribe import TranscribeOptions, format_transcript, output_path, transcribe_files

    several = len(args.files) > 1
    if several and args.format in ("srt", "vtt") and not args.output_dir:
        raise AsrError(f"--format {args.format} with several files needs --output-dir (one subtitle file each)")
    try:
        segmenter = SegmenterConfig(max_segment_s=args.max_segment, min_silence_s=args.min_silence,
                                    start_db=args.vad_threshold, stop_db=min(6.0, args.vad_threshold))
        options = TranscribeOptions(segmenter=segmenter, batch_seconds=args.batch_seconds)
    except ValueError as err:
        raise AsrError(str(err)) from None
    recognizer, decode, lm = load_recognizer(args)
    if args.output_dir:
        targets = [output_path(args.output_dir, f, args.format) for f in args.files]
        clash = next((t for t in targets if targets.count(t) > 1), None)
        if clash is not None:
            raise AsrError(f"several inputs would be written to {clash}; give files with distinct names")
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    failed = 0
    for transcript in transcribe_files(recognizer, args.files, options, decode, lm):
        if transcript.error is not None:
            failed += 1
            print(f"asr transcribe: error: {transcript.error}", file=sys.stderr, flush=True)
            continue
        text = format_transcript(transcript, args.format)
        if args.output_dir:
            output_path(args.output_dir, transcript.path, args.format).write_text(text, encoding="utf-8")
        elif several and args.format == "txt":
            print(f"{transcript.path}\t{text}", end="", flush=True)
        else:
            print(text, end="", flush=True)
    if failed:
        print(f"asr transcribe: {failed} of {len(args.files)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0
