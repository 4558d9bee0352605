"""`asr validate`: a manifest with one planted fault of each kind lists every one of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.cli import main
from asr.data.validate import FAULT_KINDS, validate_manifest
from asr.text import CharTokenizer


def write_audio(path: Path, seconds: float, sr: int = 16000) -> Path:
    t = np.arange(int(round(seconds * sr))) / sr
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), sr)
    return path


@pytest.fixture()
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """(manifest, vocab): two good utterances, one good segment, and one fault of each kind."""
    audio = tmp_path / "audio"
    audio.mkdir()
    for name, seconds in [("good1", 1.0), ("good2", 0.5), ("long", 3.0), ("short", 1.0), ("oov", 0.5), ("empty", 0.5)]:
        write_audio(audio / f"{name}.flac", seconds)
    (audio / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)  # a FLAC signature, then garbage
    whole = (audio / "good1.flac").read_bytes()
    (audio / "truncated.flac").write_bytes(whole[: len(whole) // 2])
    rows = [
        {"id": "good1", "audio": "audio/good1.flac", "duration": 1.0, "text": "hello"},
        {"id": "good2", "audio": "audio/good2.flac", "duration": 0.5, "text": "world"},
        {"id": "seg", "audio": "audio/long.flac", "duration": 1.0, "text": "hello", "offset": 1.5},
        {"id": "missing", "audio": "audio/nowhere.flac", "duration": 1.0, "text": "hello"},
        {"id": "corrupt", "audio": "audio/corrupt.flac", "duration": 1.0, "text": "hello"},
        {"id": "truncated", "audio": "audio/truncated.flac", "duration": 1.0, "text": "hello"},
        {"id": "empty", "audio": "audio/empty.flac", "duration": 0.5, "text": "  "},
        {"id": "too_long", "audio": "audio/short.flac", "duration": 2.0, "text": "hello"},
        {"id": "past_end", "audio": "audio/long.flac", "duration": 1.0, "text": "hello", "offset": 2.5},
        {"id": "oov", "audio": "audio/oov.flac", "duration": 0.5, "text": "héllo wörld"},
        {"id": "good2", "audio": "audio/good2.flac", "duration": 0.5, "text": "world"},
        "{broken json",
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    vocab = tmp_path / "vocab.txt"
    CharTokenizer.from_texts(["hello world"]).save(vocab)
    return manifest, vocab


EXPECTED = {
    "bad_line": ["m.jsonl:12"],
    "duplicate_id": ["good2"],
    "missing_file": ["missing"],
    "unreadable_audio": ["corrupt", "truncated"],
    "empty_text": ["empty"],
    "duration_mismatch": ["too_long", "past_end"],
    "oov": ["oov"],
}


def test_every_planted_fault_is_reported(planted) -> None:
    manifest, vocab = planted
    report = validate_manifest(manifest, tokenizer=CharTokenizer.load(vocab), progress=False, jobs=2)
    found = {kind: [f.id.rsplit("/", 1)[-1] for f in faults] for kind, faults in report.by_kind().items()}
    assert found == EXPECTED
    assert list(found) == [k for k in FAULT_KINDS if k in found]  # report order
    assert report.utterances == 11 and not report.ok
    oov = report.by_kind()["oov"][0]
    assert "'é'" in oov.detail and "'ö'" in oov.detail


def test_whole_file_longer_than_declared_is_a_mismatch(tmp_path) -> None:
    write_audio(tmp_path / "a.wav", 2.0)
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav", "duration": 1.0, "text": "x"}) + "\n")
    report = validate_manifest(tmp_path / "m.jsonl", progress=False)
    assert [f.kind for f in report.faults] == ["duration_mismatch"]
    assert validate_manifest(tmp_path / "m.jsonl", progress=False, tolerance=1.5).ok


def test_cli_text_and_json_reports(planted, capsys) -> None:
    manifest, vocab = planted
    assert main(["validate", str(manifest), "--vocab", str(vocab), "--no-progress", "--max-ids", "1"]) == 1
    text = capsys.readouterr().out
    assert "unreadable_audio: 2" in text and "corrupt" in text and "... 1 more" in text
    assert main(["validate", str(manifest), "--vocab", str(vocab), "--json", "--no-progress"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {kind: len(ids) for kind, ids in EXPECTED.items()}
    assert [f["id"] for f in data["faults"]["unreadable_audio"]] == ["corrupt", "truncated"]


def test_clean_manifest_exits_zero(tmp_path, capsys) -> None:
    write_audio(tmp_path / "a.flac", 0.5)
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "audio": "a.flac", "duration": 0.5, "text": "x"}) + "\n")
    assert main(["validate", str(tmp_path / "m.jsonl"), "--no-progress"]) == 0
    assert "1 utterances, 0 faults" in capsys.readouterr().out


def test_real_dev_manifest_is_clean(so762_dir: Path, tmp_path) -> None:
    vocab = tmp_path / "vocab.txt"
    assert main(["vocab", str(so762_dir / "dev.jsonl"), "--out", str(vocab)]) == 0
    report = validate_manifest(so762_dir / "dev.jsonl", tokenizer=CharTokenizer.load(vocab), progress=False)
    assert report.ok, report.format_text()
    assert report.utterances == 315
