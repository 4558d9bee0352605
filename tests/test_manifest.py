"""Manifests, Kaldi data directories and the `asr vocab` / `asr import-kaldi` commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.cli import main
from asr.data.kaldi import KaldiError, import_kaldi_dir
from asr.data.manifest import ManifestError, Utterance, read_manifest, write_manifest
from asr.text import CharTokenizer


def write_audio(path: Path, seconds: float, sr: int = 16000, seed: int = 0) -> Path:
    """A short noise+tone file; the format follows the extension."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size), sr)
    return path


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_read_resolves_audio_against_the_manifest_folder(tmp_path, monkeypatch) -> None:
    (tmp_path / "sub").mkdir()
    rows = [
        {"id": "a", "audio": "audio/a.flac", "duration": 1.5, "text": "hi", "speaker": "s1"},
        {"id": "b", "audio": "/abs/b.wav", "duration": 2, "text": "", "offset": 0.5, "extra": 1},
    ]
    write_lines(tmp_path / "sub" / "m.jsonl", rows)
    monkeypatch.chdir(tmp_path)  # not the manifest's folder
    utts = read_manifest("sub/m.jsonl")
    assert utts == [
        Utterance("a", str(tmp_path / "sub" / "audio" / "a.flac"), 1.5, "hi", "s1", 0.0),
        Utterance("b", "/abs/b.wav", 2.0, "", None, 0.5),
    ]


def test_write_then_read_round_trip_relative_inside_absolute_outside(tmp_path) -> None:
    utts = [
        Utterance("a", str(tmp_path / "data" / "audio" / "a.flac"), 1.25, "héllo wörld", "s1"),
        Utterance("b", "/elsewhere/b.wav", 3.0, "x", None, 1.5),
    ]
    path = tmp_path / "data" / "m.jsonl"
    assert write_manifest(utts, path) == 2
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert records[0]["audio"] == "audio/a.flac" and records[1]["audio"] == "/elsewhere/b.wav"
    assert "offset" not in records[0] and records[1]["offset"] == 1.5
    assert read_manifest(path) == utts
    assert sorted(os.listdir(path.parent)) == ["m.jsonl"]  # no temporary file left behind


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"id": "x", "audio": "a.wav", "text": "t"}', "duration"),
        ('{"id": "x", "audio": "a.wav", "duration": -1, "text": "t"}', "duration"),
        ('{"id": "", "audio": "a.wav", "duration": 1, "text": "t"}', "'id'"),
        ('["a list"]', "JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, bad_line: str, message: str) -> None:
    path = write_lines(tmp_path / "m.jsonl", [{"id": "ok", "audio": "a.wav", "duration": 1, "text": "t"}, bad_line])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert f"{path}:2" in str(info.value) and message in str(info.value)


def test_duplicate_ids_are_an_error(tmp_path) -> None:
    row = {"id": "dup", "audio": "a.wav", "duration": 1, "text": "t"}
    with pytest.raises(ManifestError, match="duplicate.*dup"):
        read_manifest(write_lines(tmp_path / "m.jsonl", [row, row]))


def test_real_manifest_reads(so762_dir: Path) -> None:
    utts = read_manifest(so762_dir / "train.jsonl")
    assert len(utts) == 1500 and len({u.id for u in utts}) == 1500
    assert all(os.path.isabs(u.audio) and os.path.isfile(u.audio) for u in utts[:50])


# ---- Kaldi data directories -------------------------------------------------------------


def kaldi_dir(tmp_path: Path, files: dict[str, list[str]]) -> Path:
    d = tmp_path / "kaldi"
    d.mkdir(exist_ok=True)
    for name, lines in files.items():
        (d / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return d


def test_kaldi_whole_recordings(tmp_path) -> None:
    write_audio(tmp_path / "r1.wav", 1.0)
    write_audio(tmp_path / "r2.flac", 0.5, sr=8000)
    d = kaldi_dir(tmp_path, {
        "wav.scp": [f"u1 {tmp_path / 'r1.wav'}", "u2 r2.flac"],
        "text": ["u1 HELLO there", "u2"],
        "utt2spk": ["u1 spkA", "u2 spkB"],
    })
    utts = import_kaldi_dir(d, root=tmp_path)
    assert [(u.id, u.text, u.speaker, u.offset) for u in utts] == [("u1", "HELLO there", "spkA", 0.0), ("u2", "", "spkB", 0.0)]
    assert utts[0].duration == pytest.approx(1.0) and utts[1].duration == pytest.approx(0.5)
    assert utts[1].audio == str(tmp_path / "r2.flac")


def test_kaldi_segments(tmp_path) -> None:
    write_audio(tmp_path / "rec.wav", 4.0)
    d = kaldi_dir(tmp_path, {
        "wav.scp": [f"rec {tmp_path / 'rec.wav'}"],
        "segments": ["s1 rec 0.5 1.75", "s2 rec 2.0 -1"],
        "text": ["s1 one", "s2 two"],
    })
    utts = import_kaldi_dir(d)
    assert [(u.id, u.offset, u.speaker) for u in utts] == [("s1", 0.5, None), ("s2", 2.0, None)]
    assert utts[0].duration == pytest.approx(1.25) and utts[1].duration == pytest.approx(2.0)


@pytest.mark.parametrize(
    "files, message",
    [
        ({"wav.scp": ["u1 sox in.wav -t wav - |"], "text": ["u1 a"]}, "wav.scp:1.*piped"),
        ({"wav.scp": ["u1 {wav}"], "text": ["u1 a", "u2 b"]}, "in text but not in wav.scp: u2"),
        ({"wav.scp": ["u1 {wav}", "u3 {wav}"], "text": ["u1 a"]}, "in wav.scp but not in text: u3"),
        ({"wav.scp": ["u1 {wav}"], "text": ["u1 a"], "utt2spk": ["u9 s"]}, "u1"),
        ({"wav.scp": ["r {wav}"], "text": ["u1 a"], "segments": ["u1 nope 0 0.5"]}, "segments:1.*'nope'"),
        ({"wav.scp": ["r {wav}"], "text": ["u1 a"], "segments": ["u1 r 0 9"]}, "lasts"),
        ({"wav.scp": ["u1 {wav}", "u1 {wav}"], "text": ["u1 a"]}, "wav.scp:2.*repeats"),
        ({"wav.scp": ["u1 /no/such.wav"], "text": ["u1 a"]}, "wav.scp:1.*cannot read audio"),
    ],
)
def test_kaldi_errors_are_clear(tmp_path, files: dict[str, list[str]], message: str) -> None:
    wav = write_audio(tmp_path / "r.wav", 1.0)
    d = kaldi_dir(tmp_path, {k: [line.format(wav=wav) for line in v] for k, v in files.items()})
    with pytest.raises(KaldiError, match=message):
        import_kaldi_dir(d)


def test_import_kaldi_and_vocab_commands(tmp_path, capsys) -> None:
    write_audio(tmp_path / "r1.wav", 0.5)
    d = kaldi_dir(tmp_path, {"wav.scp": [f"u1 {tmp_path / 'r1.wav'}"], "text": ["u1 Hello, World"]})
    out = tmp_path / "m.jsonl"
    assert main(["import-kaldi", str(d), "--out", str(out)]) == 0
    assert [u.text for u in read_manifest(out)] == ["Hello, World"]
    assert main(["vocab", str(out), "--out", str(tmp_path / "vocab.txt")]) == 0
    assert CharTokenizer.load(tmp_path / "vocab.txt").symbols == CharTokenizer.from_texts(["hello world"]).symbols
    assert main(["import-kaldi", str(tmp_path), "--out", str(out)]) == 1  # not a data dir: one-line error
    assert "no wav.scp" in capsys.readouterr().err
