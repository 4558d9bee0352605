"""`asr transcribe MODEL FILE...`: transcripts of audio files of any length, as text, JSON, SRT or WebVTT."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from asr.commands._decoding import add_model_arguments, add_search_arguments, load_recognizer

if TYPE_CHECKING:
    from asr.segment_config import SegmenterConfig

HELP = "transcribe audio files of any length, rate and channel count (text, json, srt or vtt)"
PROGRESS_FORMAT = "{l_bar}{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]"


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
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar on stderr (it shows, in seconds of audio, when the work lasts over 1 s)")
    add_segmenter_arguments(parser)
    add_model_arguments(parser)
    add_search_arguments(parser)


def add_segmenter_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the energy segmenter that cuts long files (defaults: SegmenterConfig's)."""
    from asr.segment_config import SegmenterConfig

    default = SegmenterConfig()
    seg = parser.add_argument_group("segmentation of long files")
    seg.add_argument("--max-segment", type=float, default=default.max_segment_s,
                     help="longest segment decoded at once, seconds; longer files are cut by the energy detector "
                          f"(default {default.max_segment_s})")
    seg.add_argument("--min-silence", type=float, default=default.min_silence_s,
                     help=f"shortest pause that ends a segment, seconds (default {default.min_silence_s})")
    seg.add_argument("--pad", type=float, default=default.pad_s,
                     help=f"context kept before and after each stretch of speech, seconds (default {default.pad_s})")
    seg.add_argument("--vad-threshold", type=float, default=default.start_db,
                     help=f"dB above the noise floor where speech starts (default {default.start_db})")


def segmenter_config(args: argparse.Namespace) -> SegmenterConfig:
    """The SegmenterConfig of parsed `add_segmenter_arguments` options (ValueError when they do not fit)."""
    from asr.segment_config import SegmenterConfig

    return SegmenterConfig(max_segment_s=args.max_segment, min_silence_s=args.min_silence, pad_s=args.pad,
                           start_db=args.vad_threshold, stop_db=min(SegmenterConfig.stop_db, args.vad_threshold))


def run(args: argparse.Namespace) -> int:
    """Transcribe every file; a file that fails is one error line on stderr, and the exit status is 1."""
    from tqdm import tqdm

    from asr.commands._decoding import require_finite
    from asr.errors import AsrError
    from asr.files import os_reason, output_folder
    from asr.transcribe import TranscribeOptions, format_transcript, output_path, transcribe_files

    several = len(args.files) > 1
    if several and args.format in ("srt", "vtt") and not args.output_dir:
        raise AsrError(f"--format {args.format} with several files needs --output-dir (one subtitle file each)")
    require_finite(args, ("max_segment", "min_silence", "pad", "vad_threshold", "batch_seconds"))
    try:
        options = TranscribeOptions(segmenter=segmenter_config(args), batch_seconds=args.batch_seconds)
    except ValueError as err:
        raise AsrError(str(err)) from None
    if args.output_dir:
        targets = [output_path(args.output_dir, f, args.format) for f in args.files]
        clash = next((t for t in targets if targets.count(t) > 1), None)
        if clash is not None:
            raise AsrError(f"several inputs would be written to {clash}; give files with distinct names")
        output_folder(args.output_dir, "--output-dir")  # before the model loads: a bad folder fails at once
    recognizer, decode, lm = load_recognizer(args)
    failed = 0
    bar = tqdm(total=_seconds_of_audio(args.files), desc="transcribe", file=sys.stderr, delay=1.0,
               disable=args.no_progress, bar_format=PROGRESS_FORMAT)

    def progress(seconds: float) -> None:  # never past the total: tqdm warns "clamping frac" beyond it
        bar.update(min(seconds, max(0.0, bar.total - bar.n)))

    for transcript in transcribe_files(recognizer, args.files, options, decode, lm, on_progress=progress):
        if transcript.error is not None:
            failed += 1
            print(f"asr transcribe: error: {transcript.error}", file=sys.stderr, flush=True)
            continue
        text = format_transcript(transcript, args.format)
        if args.output_dir:
            target = output_path(args.output_dir, transcript.path, args.format)
            try:
                target.write_text(text, encoding="utf-8")
            except OSError as err:
                bar.close()
                raise AsrError(f"{target}: not written: {os_reason(err)}") from None
        elif several and args.format == "txt":
            print(f"{transcript.path}\t{text}", end="", flush=True)
        else:
            print(text, end="", flush=True)
    bar.close()
    if failed:
        print(f"asr transcribe: {failed} of {len(args.files)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _seconds_of_audio(files: list[str]) -> float:
    """Total duration of the files that can be read (the others are reported when their turn comes)."""
    from asr.audio import audio_info
    from asr.errors import AsrError

    total = 0.0
    for path in files:
        try:
            total += audio_info(path).duration
        except AsrError:
            pass
    return total
