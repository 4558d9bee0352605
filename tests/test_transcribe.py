"""`asr transcribe` and Recognizer.transcribe: formats, bad files, any rate/channels, long files in pieces."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_models import tiny_model

import asr
import asr.models.attention as attention_module
import asr.transcribe as transcribe_module
from asr.audio import load_audio
from asr.cli import main
from asr.errors import AsrError
from asr.models.listener import Listener
from asr.search import DecodeOptions, SearchError
from asr.segment import SegmenterConfig
from asr.transcribe import (
    TimedText,
    TranscribeOptions,
    Transcript,
    TranscriptionError,
    format_srt,
    format_transcript,
    format_vtt,
    timestamp,
    transcribe_files,
)

REPO = Path(__file__).resolve().parents[1]
SR = 16000
SRT_TIME = r"\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d"
VTT_TIME = r"\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt", ["abc def ghi jkl mno pqr stu vwx yz don't"])


@pytest.fixture(scope="module")
def recognizer(model_file):
    return asr.load_model(model_file)


def speech_like(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    envelope = 0.02 + 0.1 * (1 + np.sin(2 * np.pi * 4 * np.arange(n) / SR)) / 2
    return (rng.standard_normal(n) * envelope).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """short: 1.5 s mono 16 kHz; stereo: the same at 44.1 kHz in two channels; long: 75 s of bursts; bad: junk."""
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    short = speech_like(rng, 1.5)
    sf.write(folder / "short.wav", short, SR, subtype="FLOAT")
    stereo = load_audio(folder / "short.wav", 44100).numpy()
    sf.write(folder / "stereo.flac", np.stack([stereo, 0.8 * stereo], axis=1), 44100)
    parts = []
    for _ in range(15):
        parts += [(rng.standard_normal(int(rng.uniform(1.0, 2.0) * SR)) * 1e-3).astype(np.float32),
                  speech_like(rng, rng.uniform(2.0, 3.0))]
    sf.write(folder / "long.wav", np.concatenate(parts), SR, subtype="PCM_16")
    (folder / "bad.wav").write_bytes(b"RIFF but not really a wave file")
    return {p.stem: p for p in folder.iterdir()}


# ---------------------------------------------------------------- formats

def test_timestamps_srt_and_vtt_syntax():
    assert timestamp(0) == "00:00:00.000"
    assert timestamp(3725.5) == "01:02:05.500"
    assert timestamp(59.9996, ",") == "00:01:00,000"
    t = Transcript("a.wav", "hello world", [TimedText(0.5, 2.25, "hello"), TimedText(2.5, 3.0, ""),
                                             TimedText(61.0, 62.125, "world")], duration=63.0)
    srt = format_srt(t)
    assert srt == "1\n00:00:00,500 --> 00:00:02,250\nhello\n\n2\n00:01:01,000 --> 00:01:02,125\nworld\n\n"
    vtt = format_vtt(t)
    assert vtt.startswith("WEBVTT\n\n") and "00:01:01.000 --> 00:01:02.125\nworld\n" in vtt
    assert json.loads(format_transcript(t, "json"))["segments"][2] == {"start": 61.0, "end": 62.125, "text": "world"}
    assert format_transcript(t, "txt") == "hello world\n"


# ---------------------------------------------------------------- files

def test_bad_file_is_reported_and_the_others_are_transcribed(model_file, files, capsys, one_thread):
    args = [str(files["short"]), str(files["bad"]), str(files["stereo"])]
    assert main(["transcribe", str(model_file), *args, "--device", "cpu", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [args[0], args[2]]
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and str(files["bad"]) in errors[0]
    assert "1 of 3 file(s) failed" in err


def test_silent_short_files_get_no_transcript_and_quiet_speech_still_does(recognizer, tmp_path, one_thread):
    """Short files are decoded whole, without the segmenter; one with no frame loud enough to start
    speech (digital silence, a faint hiss) gets no segment, as a long one would, not whatever the
    model makes of it."""
    rng = np.random.default_rng(3)
    sound = {"silence": np.zeros(3 * SR, np.float32), "hiss": 1e-4 * rng.standard_normal(3 * SR),
             "quiet_speech": speech_like(rng, 1.5) * 0.05}  # peaks near -45 dBFS: quiet, but speech
    for name, wave in sound.items():
        sf.write(tmp_path / f"{name}.wav", wave.astype(np.float32), SR, subtype="FLOAT")
    got = {t.path.rsplit("/", 1)[-1]: t for t in transcribe_files(recognizer, sorted(tmp_path.glob("*.wav")))}
    assert got["silence.wav"].segments == [] and got["silence.wav"].text == ""
    assert got["hiss.wav"].segments == [] and got["hiss.wav"].error is None
    assert [(s.start, s.end) for s in got["quiet_speech.wav"].segments] == [(0.0, 1.5)]


def test_is_silent_draws_the_line_at_the_level_speech_can_start():
    from asr.segment import is_silent

    cfg = SegmenterConfig()  # speech may start at min_floor_db + start_db = -63 dBFS
    tone = np.sin(2 * np.pi * 440 * np.arange(SR) / SR)  # power 1/2: -3 dB
    for level_db, silent in [(-60.0, False), (-66.0, True)]:
        assert is_silent(tone * 10 ** ((level_db + 3.0) / 20), SR, cfg) is silent
    assert is_silent(np.zeros(10), SR, cfg)  # not even half a frame


def test_a_recording_turned_down_40_db_is_still_speech_but_a_steady_hiss_is_not():
    """Below the absolute line, a file is speech when it rises start_db above its own floor: a quiet
    speaker's 16-bit file at x0.01 (bursts near -80 dBFS over digital silence) is not silent."""
    from asr.segment import is_silent

    rng = np.random.default_rng(5)
    burst = np.zeros(SR)
    burst[4000:9000] = speech_like(rng, 5000 / SR) * 10 ** (-80 / 20) / 0.3
    quantised = np.round(burst * 32768) / 32768  # what a 16-bit file holds: zeros around the speech
    assert 20 * np.log10(np.abs(quantised).max()) < -70
    assert not is_silent(quantised, SR)
    assert is_silent(10 ** (-80 / 20) * rng.standard_normal(SR), SR)  # flat: never start_db above itself
    assert is_silent(np.zeros(SR), SR)


def test_stereo_44k_gives_the_transcript_of_its_16k_mono_mixdown(recognizer, files, tmp_path, one_thread):
    mono16 = load_audio(files["stereo"], SR)
    sf.write(tmp_path / "mono16.wav", mono16.numpy(), SR, subtype="FLOAT")
    out = recognizer.transcribe([files["stereo"], tmp_path / "mono16.wav"])
    assert out[0] == out[1]
    assert recognizer.transcribe(str(files["stereo"])) == out[:1]  # a single path is fine too


def test_long_file_is_read_in_segments_and_batching_does_not_change_it(recognizer, files, monkeypatch, one_thread):
    requested = []

    def spy(path, sample_rate, **kw):
        requested.append(kw.get("duration"))
        return load_audio(path, sample_rate, **kw)

    monkeypatch.setattr(transcribe_module, "load_audio", spy)
    options = TranscribeOptions(segmenter=SegmenterConfig(max_segment_s=10.0))
    [big] = list(transcribe_files(recognizer, [files["long"]], options))
    assert big.error is None and big.duration == pytest.approx(sf.info(str(files["long"])).duration)
    assert len(big.segments) == 15  # one per burst
    assert all(d is not None and d <= 10.0 for d in requested) and len(requested) == 15
    assert all(a.end <= b.start for a, b in zip(big.segments, big.segments[1:]))
    assert big.text == " ".join(s.text for s in big.segments if s.text)
    small = TranscribeOptions(segmenter=SegmenterConfig(max_segment_s=10.0), batch_seconds=0.5)
    [one_at_a_time] = list(transcribe_files(recognizer, [files["long"]], small))
    assert one_at_a_time.segments == big.segments


def test_files_share_batches_but_come_back_in_order(recognizer, files, one_thread):
    paths = [files["long"], files["short"], files["bad"], files["stereo"], files["short"]]
    options = TranscribeOptions(segmenter=SegmenterConfig(max_segment_s=10.0))
    progress: list[float] = []
    together = list(transcribe_files(recognizer, paths, options, on_progress=progress.append))
    assert [t.path for t in together] == [str(p) for p in paths]
    # Progress adds up to the audio of the files that could be read, in steps as batches end.
    assert all(step > 0 for step in progress) and len(progress) > len(paths)
    assert sum(progress) == pytest.approx(sum(t.duration for t in together if t.error is None))
    assert [t.error is None for t in together] == [True, True, False, True, True]
    alone = [next(transcribe_files(recognizer, [p], options)) for p in paths]
    assert [t.text for t in together] == [t.text for t in alone]
    assert together[1].segments == [TimedText(0.0, 1.5, together[1].text)]  # a short file is one piece
    with pytest.raises(TranscriptionError, match="bad.wav"):
        recognizer.transcribe(paths)


def test_a_file_that_fails_half_way_still_fills_its_share_of_the_progress(recognizer, files, monkeypatch,
                                                                           one_thread):
    """The CLI sizes its bar by the files' headers: a file whose audio breaks after some segments were
    decoded must still bring the bar to its end, or it stops short of 100 %."""
    def breaks_after_30_s(path, sample_rate, offset=0.0, **kw):
        if offset > 30.0:
            raise AsrError(f"{path}: unexpected end of data")
        return load_audio(path, sample_rate, offset=offset, **kw)

    monkeypatch.setattr(transcribe_module, "load_audio", breaks_after_30_s)
    options = TranscribeOptions(segmenter=SegmenterConfig(max_segment_s=10.0), batch_seconds=5.0)
    progress: list[float] = []
    broken, short = transcribe_files(recognizer, [files["long"], files["short"]], options,
                                     on_progress=progress.append)
    assert "unexpected end of data" in broken.error and broken.segments == [] and short.error is None
    assert len(progress) > 3  # some segments of the broken file were decoded before it failed
    assert sum(progress) == pytest.approx(sf.info(str(files["long"])).duration + 1.5)


def test_a_decoding_error_stops_everything_instead_of_failing_each_file(recognizer, files, monkeypatch):
    def broken(*args, **kwargs):
        raise SearchError("ctc_weight > 0 needs a model with a CTC head")

    monkeypatch.setattr(recognizer, "decode_texts", broken)
    with pytest.raises(SearchError):
        list(transcribe_files(recognizer, [files["short"], files["stereo"]]))


def test_subtitles_and_json_into_an_output_directory(model_file, files, tmp_path, capsys, one_thread):
    args = ["transcribe", str(model_file), str(files["long"]), str(files["short"]), "--device", "cpu",
            "--max-segment", "10"]
    assert main(args + ["--format", "srt"]) == 1  # several files need --output-dir
    assert "--output-dir" in capsys.readouterr().err
    assert main(args + ["--format", "vtt", "--output-dir", str(tmp_path)]) == 0
    vtt = (tmp_path / "long.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n") and len(re.findall(VTT_TIME, vtt)) == 15
    assert main(["transcribe", str(model_file), str(files["long"]), "--format", "srt", "--max-segment", "10"]) == 0
    srt = capsys.readouterr().out
    assert len(re.findall(rf"^\d+\n{SRT_TIME}\n.+\n$", srt, flags=re.M)) == 15
    assert main(args + ["--format", "json"]) == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(o["file"]).name for o in objs] == ["long.wav", "short.wav"]
    assert len(objs[0]["segments"]) == 15 and set(objs[0]["segments"][0]) == {"start", "end", "text"}


def test_segmenter_options_reach_the_segmenter(model_file, files, capsys, one_thread):
    def segments(*extra: str) -> list[dict]:
        assert main(["transcribe", str(model_file), str(files["long"]), "--format", "json", "--device", "cpu",
                     "--max-segment", "10", *extra]) == 0
        return json.loads(capsys.readouterr().out)["segments"]

    padded, tight = segments(), segments("--pad", "0")
    assert len(tight) == len(padded) == 15
    assert all(t["start"] >= p["start"] and t["end"] <= p["end"] for t, p in zip(tight, padded))
    assert sum(t["start"] - p["start"] for t, p in zip(tight, padded)) > 15 * 0.15  # 0.2 s less on each side
    assert len(segments("--min-silence", "100")) < 15  # no pause is long enough: only max-segment cuts
    assert main(["transcribe", str(model_file), str(files["long"]), "--pad", "-1"]) == 1
    assert "durations must be >= 0" in capsys.readouterr().err


# ---------------------------------------------------------------- precision

@pytest.mark.parametrize("paths", ["cpu", "generic"])
def test_bfloat16_decoding_casts_the_encoder_and_decoder_but_not_features_or_scores(paths, model_file, files, capsys,
                                                                                     monkeypatch, one_thread):
    if paths == "generic":  # the code GPUs run: packed listener, attention without the CPU-only fast paths
        monkeypatch.setattr(attention_module, "cpu_inference", lambda x: False)
        monkeypatch.setattr(Listener, "impl_for", lambda self, device: "packed")
    full, half = asr.load_model(model_file), asr.load_model(model_file, dtype="bfloat16")
    m = half.model
    assert m.listener.impl_for(torch.device("cpu")) == ("packed" if paths == "generic" else "reverse")
    assert {p.dtype for part in (m.listener, m.speller, m.ctc) for p in part.parameters()} == {torch.bfloat16}
    assert {b.dtype for b in [*m.frontend.parameters(), *m.frontend.buffers()] if b.is_floating_point()} == {
        torch.float32}
    wave = load_audio(files["short"]).unsqueeze(0)
    lengths = torch.tensor([wave.shape[1]])
    with torch.no_grad():
        (enc32, n32), (enc16, n16) = full._encode(wave, lengths), half._encode(wave, lengths)
        assert enc16.dtype == torch.bfloat16 and torch.equal(n16, n32)
        assert (enc16.float() - enc32).abs().max() < 0.01  # bf16 keeps 8 bits: ~1e-3 here
        # The speller fed the same tokens gives float32 log-probs close to float32's.
        tokens = torch.tensor([m.go_id] + full.tokenizer.encode("abc def"))
        state32, state16 = full.model.speller.init_state(enc32, n32), m.speller.init_state(enc16, n16)
        for tok in tokens:
            lp32, state32 = full.model.speller.step(state32, tok.view(1))
            lp16, state16 = m.speller.step(state16, tok.view(1))
            assert lp16.dtype == torch.float32 and state16.weights.dtype == torch.float32
            assert (lp16 - lp32).abs().max() < 0.1
    best = half.decode(wave, lengths, DecodeOptions(beam_size=4, ctc_weight=0.3))[0][0]
    assert isinstance(best.score, float) and math.isfinite(best.score)
    assert main(["transcribe", str(model_file), str(files["short"]), "--dtype", "bfloat16", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == half.transcribe(files["short"])[0].strip()
    with pytest.raises(AsrError, match="float16"):
        asr.load_model(model_file, dtype="float16")


def test_a_recognizer_loaded_in_bfloat16_is_not_saved(model_file, tmp_path):
    """Its weights are rounded: saving them would silently lose the trained precision."""
    half = asr.load_model(model_file, dtype="bfloat16")
    with pytest.raises(AsrError, match=r"half\.pt: not saved: this recognizer decodes in bfloat16"):
        half.save(tmp_path / "half.pt")
    assert not (tmp_path / "half.pt").exists()
    asr.load_model(model_file).save(tmp_path / "full.pt")
    again = asr.load_model(tmp_path / "full.pt")
    assert {p.dtype for p in again.model.parameters()} == {torch.float32}


# ---------------------------------------------------------------- the long-audio tool

def test_long_audio_check_tool_runs(model_file, so762_dir, capsys, one_thread):
    spec = importlib.util.spec_from_file_location("long_audio_check", REPO / "tools" / "long_audio_check.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool  # its dataclasses look their module up there
    spec.loader.exec_module(tool)
    assert tool.main([str(model_file), str(so762_dir / "dev.jsonl"), "--minutes", "0.5", "--json",
                      "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["minutes"] >= 0.5 and out["utterances"] >= 5 and out["matched"] == out["utterances"]
    assert out["peak_rss_mb"] >= out["rss_before_mb"] > 0
    assert out["span_start_error_max"] < 0.5 and out["span_end_error_max"] < 0.5
    for key in ("wer_long", "wer_one_by_one", "start_error_max", "end_error_mean", "rtf_long"):
        assert key in out


# ---------------------------------------------------------------- attention plots

def test_attention_along_the_hypothesis_and_the_plot_command(recognizer, model_file, files, tmp_path, capsys,
                                                             one_thread):
    wave = load_audio(files["short"], SR)
    [[best]] = recognizer.decode(wave.unsqueeze(0), torch.tensor([wave.shape[0]]))
    weights = recognizer.attention(wave, best.tokens)
    assert weights.shape[0] == len(best.tokens) + 1 and weights.shape[1] > 10
    assert torch.allclose(weights.sum(dim=1), torch.ones(weights.shape[0]), atol=1e-4)
    out = tmp_path / "hyp.png"
    assert main(["plot-attention", str(model_file), str(files["stereo"]), "--out", str(out), "--device", "cpu"]) == 0
    assert main(["plot-attention", str(model_file), str(files["short"]), "--text", "abc def", "--out",
                 str(tmp_path / "ref.png")]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "ref.png").stat().st_size > 1000
    assert main(["plot-attention", str(model_file), str(files["short"]), "--text", "abc 9", "--out",
                 str(tmp_path / "x.png")]) == 1
    assert "'9'" in capsys.readouterr().err
