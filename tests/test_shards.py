"""`asr shard`: tar shards that webdataset itself reads back, with an index and a count check."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from asr.cli import main
from asr.data.manifest import Utterance, read_manifest
from asr.data.shards import ShardError, read_index, sample_key, unique_keys, write_shards


def write_audio(path: Path, seconds: float, sr: int = 16000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = (0.2 * rng.standard_normal(int(round(seconds * sr)))).clip(-1, 1)
    sf.write(path, data, sr, subtype="PCM_16")
    return path


@pytest.fixture()
def utterances(tmp_path: Path) -> list[Utterance]:
    """Whole files (wav and flac, awkward ids) and a segment of a longer recording."""
    a = write_audio(tmp_path / "a.wav", 0.5, seed=1)
    b = write_audio(tmp_path / "b.flac", 0.75, seed=2)
    rec = write_audio(tmp_path / "rec.flac", 3.0, seed=3)
    return [
        Utterance("spk1/utt.1", str(a), 0.5, "first", "spk1"),
        Utterance("spk1/utt_1", str(b), 0.75, "second", None),
        Utterance("seg 3", str(rec), 1.25, "third", "spk2", offset=1.0),
    ]


def test_keys_have_no_dots_slashes_or_spaces() -> None:
    assert sample_key("a.b/c d\\e") == "a_b_c_d_e"
    assert unique_keys(["x.1", "x_1", "x/1"]) == ["x_1", "x_1-1", "x_1-2"]


def test_shards_round_trip_through_webdataset(tmp_path, utterances) -> None:
    index = write_shards(utterances, tmp_path / "out", shard_size=2, order="sorted", progress=False)
    assert [(e.shard, e.utterances) for e in index.shards] == [("train-000000.tar", 2), ("train-000001.tar", 1)]
    assert index.seconds == pytest.approx(2.5)
    assert read_index(tmp_path / "out" / "train.index.jsonl") == index

    url = str(tmp_path / "out" / "train-{000000..000001}.tar")
    samples = list(wds.WebDataset(url, shardshuffle=False))  # the library's own reader is the reference
    assert [s["__key__"] for s in samples] == ["spk1_utt_1", "spk1_utt_1-1", "seg_3"]  # sorted by duration
    meta = [json.loads(s["json"]) for s in samples]
    assert [m["id"] for m in meta] == ["spk1/utt.1", "spk1/utt_1", "seg 3"]
    assert [m["text"] for m in meta] == ["first", "second", "third"]
    assert [m["speaker"] for m in meta] == ["spk1", None, "spk2"]
    assert samples[0]["wav"] == Path(utterances[0].audio).read_bytes()  # stored as is
    assert samples[1]["flac"] == Path(utterances[1].audio).read_bytes()

    cut, sr = sf.read(io.BytesIO(samples[2]["flac"]), dtype="float32")  # the segment, re-encoded as FLAC
    whole, _ = sf.read(utterances[2].audio, dtype="float32")
    assert sr == 16000 and meta[2]["duration"] == pytest.approx(1.25)
    np.testing.assert_allclose(cut, whole[16000:36000], atol=1 / 32768)


def test_shuffle_order_follows_the_seed(tmp_path, utterances) -> None:
    def order(seed: int, name: str) -> list[str]:
        write_shards(utterances, tmp_path / name, shard_size=10, seed=seed, progress=False)
        with tarfile.open(tmp_path / name / "train-000000.tar") as tar:
            return [m.name for m in tar.getmembers()]

    assert order(1, "a") == order(1, "b")
    assert {tuple(order(s, f"s{s}")) for s in range(6)} != {tuple(order(1, "a"))}  # some seed differs


def test_shards_are_identical_when_written_twice(tmp_path, utterances) -> None:
    write_shards(utterances, tmp_path / "a", shard_size=2, progress=False)
    write_shards(utterances, tmp_path / "b", shard_size=2, progress=False)
    for name in ("train-000000.tar", "train-000001.tar", "train.index.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_count_mismatch_on_reread_is_an_error(tmp_path, utterances, monkeypatch) -> None:
    monkeypatch.setattr("asr.data.shards.count_samples", lambda path: 1)
    with pytest.raises(ShardError, match="holds 1 samples, 2 were written"):
        write_shards(utterances, tmp_path / "out", shard_size=2, progress=False)
    assert not (tmp_path / "out" / "train.index.jsonl").exists()  # no index for a bad set


def test_unreadable_audio_names_the_utterance(tmp_path, utterances) -> None:
    bad = [*utterances, Utterance("gone", str(tmp_path / "gone.wav"), 1.0, "x")]
    with pytest.raises(ShardError, match="'gone'"):
        write_shards(bad, tmp_path / "out", shard_size=2, progress=False)
    assert not list((tmp_path / "out").glob(".*tmp*"))  # temporary files are removed


def test_truncated_index_is_rejected(tmp_path, utterances) -> None:
    write_shards(utterances, tmp_path / "out", shard_size=2, progress=False)
    path = tmp_path / "out" / "train.index.jsonl"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(ShardError, match="totals"):
        read_index(path)


def test_shard_command_on_real_data(so762_dir: Path, tmp_path, capsys) -> None:
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text("".join((so762_dir / "dev.jsonl").read_text().splitlines(keepends=True)[:60]))
    # relative audio paths must resolve against the original folder: rewrite them as absolute
    utts = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**u, "audio": str(so762_dir / u["audio"])}) + "\n" for u in utts))
    out = tmp_path / "shards"
    assert main(["shard", str(manifest), "--out", str(out), "--shard-size", "25", "--prefix", "dev", "--no-progress"]) == 0
    assert "wrote 3 shards, 60 utterances" in capsys.readouterr().out
    index = read_index(out / "dev.index.jsonl")
    assert [e.utterances for e in index.shards] == [25, 25, 10]
    assert index.seconds == pytest.approx(sum(u.duration for u in read_manifest(manifest)), abs=0.01)
