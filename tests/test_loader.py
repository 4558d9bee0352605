"""Streaming loader: splitting over ranks and workers, determinism, faults, bucketing, batches."""

from __future__ import annotations

import io
import logging
import random
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.cli import main
from asr.data.batching import Batch, bucket_batches, cut_batches, shuffle_buffer
from asr.data.loader import LoaderConfig, make_loader, split
from asr.data.manifest import Utterance, read_manifest, write_manifest
from asr.data.samples import Sample, split_member_name
from asr.data.shards import write_shards
from asr.errors import AsrError
from asr.text import CharTokenizer

WORDS = ["zero", "one", "two", "three", "four", "five", "don't", "stop"]
CFG = dict(batch_seconds=4.0, shuffle_buffer=10, bucket_buffer=12, seed=3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict:
    """40 short utterances (16 kHz FLAC and 8 kHz WAV), their manifest and 8 shards of 5."""
    root = tmp_path_factory.mktemp("synth")
    rng = np.random.default_rng(0)
    utts = []
    for i in range(40):
        sr, ext = (16000, "flac") if i % 2 == 0 else (8000, "wav")
        seconds = round(float(rng.uniform(0.2, 1.2)), 3)
        path = root / f"u{i:03d}.{ext}"
        sf.write(path, (0.1 * rng.standard_normal(int(round(seconds * sr)))).clip(-1, 1), sr, subtype="PCM_16")
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        utts.append(Utterance(f"u{i:03d}", str(path), seconds, text.upper(), f"s{i % 4}"))
    write_manifest(utts, root / "all.jsonl")
    write_shards(utts, root / "shards", shard_size=5, progress=False)
    return {"root": root, "utts": {u.id: u for u in utts}, "shards": root / "shards", "manifest": root / "all.jsonl"}


def run_epoch(source, epoch: int = 0, **kw) -> list[list[str]]:
    loader = make_loader(source, **{**CFG, **kw})
    loader.set_epoch(epoch)
    return [b.ids for b in loader]


def tar_bytes_truncate_member(path: Path, member: str) -> None:
    """Edit a tar in place: member `member` keeps only the first half of its data (size field and checksum fixed)."""
    with tarfile.open(path) as tar:
        info = tar.getmember(member)
    data = bytearray(path.read_bytes())
    header = data[info.offset : info.offset + 512]
    new_size = info.size // 2
    header[124:136] = b"%011o\0" % new_size
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    padded = lambda n: (n + 511) // 512 * 512  # noqa: E731
    rest = data[info.offset_data + padded(info.size) :]
    body = data[info.offset_data : info.offset_data + new_size] + b"\0" * (padded(new_size) - new_size)
    path.write_bytes(bytes(data[: info.offset] + header + body + rest))


# ---- pure pieces ---------------------------------------------------------------------------


def fake(key: str, duration: float) -> Sample:
    return Sample(key, key, "", duration, None, b"", "test")


def test_cut_batches_respects_padded_seconds_and_size() -> None:
    samples = [fake(f"k{i}", d) for i, d in enumerate([0.5, 0.5, 1.0, 1.0, 1.0, 2.0, 5.0])]
    batches, rest = cut_batches(samples, batch_seconds=3.0, max_batch_size=None)
    assert [[s.key for s in b] for b in batches] == [["k0", "k1", "k2"], ["k3", "k4"], ["k5"]]
    assert [s.key for s in rest] == ["k6"]  # longer than batch_seconds: a batch of its own, last
    batches, rest = cut_batches(samples[:5], batch_seconds=100.0, max_batch_size=2)
    assert [len(b) for b in batches] == [2, 2] and len(rest) == 1


def test_bucketing_keeps_every_sample_and_carries_the_remainder() -> None:
    rng = random.Random(0)
    samples = [fake(f"k{i}", rng.uniform(0.1, 2.0)) for i in range(200)]
    batches = list(bucket_batches(samples, batch_seconds=5.0, max_batch_size=8, buffer_size=30, rng=random.Random(1)))
    assert sorted(s.key for b in batches for s in b) == sorted(s.key for s in samples)
    assert all(len(b) * max(s.duration for s in b) <= 5.0 and len(b) <= 8 for b in batches)
    dropped = list(bucket_batches(samples, batch_seconds=5.0, max_batch_size=8, buffer_size=30, rng=None, drop_last=True))
    assert sum(map(len, dropped)) < 200 and len(dropped) == len(batches) - 1


def test_shuffle_buffer_is_a_seeded_permutation() -> None:
    out = list(shuffle_buffer(range(100), 10, random.Random(5)))
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert out == list(shuffle_buffer(range(100), 10, random.Random(5)))


def test_member_names_split_like_webdataset() -> None:
    assert split_member_name("dir/u_1.seg.FLAC") == ("dir/u_1", "seg.flac")
    assert split_member_name("u1.json") == ("u1", "json")


def test_split_is_round_robin_over_ranks_then_workers() -> None:
    shards = list(range(11))
    parts = {(r, w): split(shards, r, 2, w, 2) for r in range(2) for w in range(2)}
    assert parts == {(0, 0): [0, 4, 8], (0, 1): [2, 6, 10], (1, 0): [1, 5, 9], (1, 1): [3, 7]}


# ---- the loader on synthetic shards ------------------------------------------------------


def test_every_utterance_once_over_ranks_and_workers(synth) -> None:
    tok = CharTokenizer.from_texts(u.text for u in synth["utts"].values())
    seen = []
    for rank in range(2):
        loader = make_loader(synth["shards"], tokenizer=tok, num_workers=2, rank=rank, world_size=2, **CFG)
        for batch in loader:
            seen += batch.ids
            for i, uid in enumerate(batch.ids):
                utt = synth["utts"][uid]
                assert batch.texts[i] == utt.text and batch.speakers[i] == utt.speaker
                n = int(batch.wave_lengths[i])
                assert abs(n - utt.duration * 16000) <= 1  # 8 kHz files are resampled to 16 kHz
                assert torch.all(batch.waves[i, n:] == 0)
                ids = batch.targets[i, : int(batch.target_lengths[i])].tolist()
                assert tok.decode(ids) == tok.normalize(utt.text)  # no [GO]/[EOS] inside
                assert torch.all(batch.targets[i, int(batch.target_lengths[i]) :] == tok.pad_id)
            assert len(batch) * max(batch.durations) <= CFG["batch_seconds"]
        assert loader.skipped == 0 and loader.dropped == 0
    assert sorted(seen) == sorted(synth["utts"])


def test_waves_match_the_files(synth) -> None:
    batch = next(iter(make_loader(synth["shards"], shuffle=False, **{**CFG, "batch_seconds": 100.0})))
    for i, uid in enumerate(batch.ids):
        path = synth["utts"][uid].audio
        if path.endswith(".flac"):  # 16 kHz: no resampling, the samples themselves
            ref, _ = sf.read(path, dtype="float32")
            np.testing.assert_array_equal(batch.waves[i, : len(ref)].numpy(), ref)


def test_manifest_source_gives_the_same_utterances(synth) -> None:
    from_manifest = {uid for ids in run_epoch(synth["manifest"], num_workers=2, rank=1, world_size=2) for uid in ids}
    from_manifest |= {uid for ids in run_epoch(synth["manifest"], rank=0, world_size=2) for uid in ids}
    assert from_manifest == set(synth["utts"])


def test_order_is_deterministic_per_seed_and_epoch(synth) -> None:
    for workers in (0, 2):
        first = run_epoch(synth["shards"], epoch=1, num_workers=workers)
        assert run_epoch(synth["shards"], epoch=1, num_workers=workers) == first
        assert run_epoch(synth["shards"], epoch=2, num_workers=workers) != first
        assert run_epoch(synth["shards"], epoch=1, num_workers=workers, seed=4) != first
        assert sorted(uid for ids in first for uid in ids) == sorted(synth["utts"])


def test_iter_from_resumes_mid_epoch(synth) -> None:
    loader = make_loader(synth["shards"], num_workers=2, **CFG)
    loader.set_epoch(5)
    full = [b.ids for b in loader]
    assert loader.position == len(full)
    for k in (0, 3, len(full) - 1):
        assert [b.ids for b in loader.iter_from(k)] == full[k:]


def test_iter_from_does_not_decode_the_skipped_batches(synth, monkeypatch) -> None:
    import asr.data.loader as loader_module

    decoded = []
    real = loader_module.decode_samples
    monkeypatch.setattr(loader_module, "decode_samples", lambda group, *a: decoded.extend(group) or real(group, *a))
    loader = make_loader(synth["shards"], **CFG)
    full = [b.ids for b in loader]
    assert len(decoded) == 40
    decoded.clear()
    assert [b.ids for b in loader.iter_from(4)] == full[4:]
    assert len(decoded) == sum(len(ids) for ids in full[4:])


@pytest.mark.parametrize("ext", ["flac", "wav"])  # FLAC fails to decode; WAV decodes short, caught by its duration
def test_truncated_member_is_skipped_and_counted(synth, tmp_path, caplog, ext: str) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(synth["shards"], shards)
    with tarfile.open(shards / "train-000002.tar") as tar:
        victim = next(m.name for m in tar.getmembers() if m.name.endswith(ext))
    tar_bytes_truncate_member(shards / "train-000002.tar", victim)
    key = victim.split(".")[0]
    with caplog.at_level(logging.WARNING):
        ids = [uid for b in run_epoch(shards, shuffle=False) for uid in b]
    assert sorted(ids) == sorted(set(synth["utts"]) - {key})
    assert any(key in r.getMessage() and "train-000002.tar" in r.getMessage() for r in caplog.records)
    loader = make_loader(shards, num_workers=2, **CFG)  # the count crosses worker processes
    assert sum(len(b) for b in loader) == 39 and loader.skipped == 1


def test_cut_shard_file_and_bad_json(synth, tmp_path) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(synth["shards"], shards)
    cut = shards / "train-000001.tar"
    with tarfile.open(cut) as tar:
        third = [m for m in tar.getmembers() if not m.name.endswith(".json")][2]
    cut.write_bytes(cut.read_bytes()[: third.offset_data + 100])  # ends inside the third sample's audio
    with tarfile.open(shards / "train-000003.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shards / "train-000003.tar", "w") as tar:
        for m, data in members:
            data = b"{oops" if m.name == members[1][0].name else data  # first sample's json
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    loader = make_loader(shards, num_workers=2, **CFG)
    delivered = sum(len(b) for b in loader)
    assert loader.skipped == 3 + 1  # cut shard: 2 read, 3 lost (counted from the index); 1 bad json
    assert delivered == 40 - loader.skipped


def test_duration_filter_and_drop_last_are_counted(synth) -> None:
    durations = [u.duration for u in synth["utts"].values()]
    expect = sum(1 for d in durations if d < 0.4 or d > 1.0)
    loader = make_loader(synth["shards"], min_duration=0.4, max_duration=1.0, num_workers=2, **CFG)
    delivered = [d for b in loader for d in b.durations]
    assert loader.dropped == expect and len(delivered) == 40 - expect
    assert all(0.4 <= d <= 1.0 for d in delivered)
    loader = make_loader(synth["shards"], drop_last=True, **CFG)
    assert sum(len(b) for b in loader) + loader.dropped == 40 and loader.dropped > 0


def test_config_object_and_overrides(synth) -> None:
    config = LoaderConfig(**CFG, shuffle=False)
    loader = make_loader(synth["shards"], config, max_batch_size=2)
    assert loader.config == LoaderConfig(**CFG, shuffle=False, max_batch_size=2)
    assert [b.ids for b in loader] == run_epoch(synth["shards"], shuffle=False, max_batch_size=2)


def test_max_batch_size(synth) -> None:
    sizes = [len(ids) for ids in run_epoch(synth["shards"], max_batch_size=3, batch_seconds=100.0)]
    assert max(sizes) == 3 and sum(sizes) == 40


def test_sources_patterns_pipes_lists_and_uneven_ranks(synth) -> None:
    d = synth["shards"]
    everything = sorted(synth["utts"])
    pattern = str(d / "train-{000000..000007}.tar")
    assert sorted(u for ids in run_epoch(pattern) for u in ids) == everything
    pipes = [f"pipe:cat {p}" for p in sorted(d.glob("*.tar"))]
    assert sorted(u for ids in run_epoch(pipes) for u in ids) == everything
    # 5 shards over 2 ranks: 3 and 2 shards, nothing lost or repeated
    five = [str(p) for p in sorted(d.glob("*.tar"))[:5]]
    per_rank = [[u for ids in run_epoch(five, rank=r, world_size=2) for u in ids] for r in range(2)]
    assert [len(p) for p in per_rank] == [15, 10] and not set(per_rank[0]) & set(per_rank[1])
    with pytest.raises(AsrError, match="cannot feed 9 ranks"):
        make_loader(d, rank=0, world_size=9)
    with pytest.raises(AsrError, match="not found"):
        make_loader(str(d / "train-{000000..000009}.tar"))


def test_batch_to_and_pin_memory(synth) -> None:
    batch = next(iter(make_loader(synth["shards"], tokenizer=CharTokenizer.from_texts(["a"], oov="unk"), **CFG)))
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.waves, batch.waves) and moved.ids == batch.ids
    if torch.cuda.is_available():
        assert batch.pin_memory().waves.is_pinned() and batch.to("cuda").targets.is_cuda


def test_oov_text_is_skipped_not_fatal(synth) -> None:
    tok = CharTokenizer.from_texts(["zero one two three four five don't"])  # no "s", "p" of "stop"
    loader = make_loader(synth["shards"], tokenizer=tok, **CFG)
    n = sum(len(b) for b in loader)
    has_stop = sum(1 for u in synth["utts"].values() if "STOP" in u.text)
    assert has_stop > 0 and loader.skipped == has_stop and n == 40 - has_stop


def test_too_short_clips_are_skipped_and_counted_apart_from_oov_text(tmp_path, caplog) -> None:
    """A 1-sample or 3 ms clip would leave the listener no frame and stop training: the loader skips
    it with a warning naming the file; text outside the vocabulary is counted on its own."""
    rng = np.random.default_rng(1)
    rows = {"good": (0.5, "one"), "tiny": (1 / 16000, "one"), "three_ms": (0.003, "two"), "oov": (0.5, "stop")}
    utts = []
    for uid, (seconds, text) in rows.items():
        sf.write(tmp_path / f"{uid}.wav", 0.1 * rng.standard_normal(max(1, round(seconds * 16000))), 16000)
        utts.append(Utterance(uid, str(tmp_path / f"{uid}.wav"), seconds, text))
    write_manifest(utts, tmp_path / "m.jsonl")
    loader = make_loader(tmp_path / "m.jsonl", tokenizer=CharTokenizer.from_texts(["one two"]), **CFG)
    with caplog.at_level(logging.WARNING):
        assert [uid for b in loader for uid in b.ids] == ["good"]
    assert (loader.skipped, loader.skipped_oov) == (3, 1)
    assert any("tiny.wav" in r.getMessage() and "1 samples" in r.getMessage() for r in caplog.records)
    assert loader.skip_summary().startswith("skipped 3 samples (2 with unreadable, too short or mislabelled audio, "
                                            "1 with text outside the vocabulary)")
    off = make_loader(tmp_path / "m.jsonl", min_audio_seconds=None, duration_tolerance=None, **CFG)
    assert sorted(uid for b in off for uid in b.ids) == sorted(rows)  # without a tokenizer or a minimum: all


def test_whole_file_longer_than_its_manifest_duration_is_skipped(tmp_path, caplog) -> None:
    sf.write(tmp_path / "a.wav", np.zeros(32000), 16000)
    sf.write(tmp_path / "b.wav", np.zeros(32000), 16000)
    utts = [Utterance("a", str(tmp_path / "a.wav"), 0.5, "x"), Utterance("b", str(tmp_path / "b.wav"), 2.0, "x"),
            Utterance("seg", str(tmp_path / "b.wav"), 0.5, "x", offset=1.0)]  # b.wav serves two: not a whole file
    write_manifest(utts, tmp_path / "m.jsonl")
    loader = make_loader(tmp_path / "m.jsonl", **CFG)
    with caplog.at_level(logging.WARNING):
        assert sorted(uid for b in loader for uid in b.ids) == ["b", "seg"]
    assert loader.skipped == 1
    assert any("a.wav" in r.getMessage() and "the file lasts 2.000 s but the manifest says 0.5 s" in r.getMessage()
               for r in caplog.records)


def test_empty_shard_index_and_bad_loader_numbers_are_errors(tmp_path) -> None:
    (tmp_path / "x.index.jsonl").write_text('{"total": {"shards": 0, "utterances": 0, "seconds": 0}}\n')
    with pytest.raises(AsrError, match="no shards to read"):
        make_loader(tmp_path / "x.index.jsonl")
    (tmp_path / "m.jsonl").write_text("")
    with pytest.raises(AsrError, match="empty manifest"):
        make_loader(tmp_path / "m.jsonl")
    sf.write(tmp_path / "a.wav", np.zeros(8000), 16000)
    write_manifest([Utterance("a", str(tmp_path / "a.wav"), 0.5, "x")], tmp_path / "m.jsonl")
    for name, value in [("batch_seconds", float("nan")), ("duration_tolerance", float("inf")),
                        ("min_audio_seconds", -1.0)]:
        with pytest.raises(AsrError, match=name):
            make_loader(tmp_path / "m.jsonl", **{name: value})


# ---- acceptance on real speech ---------------------------------------------------------------


def test_real_shards_two_ranks_two_workers(so762_dir: Path, tmp_path) -> None:
    manifest = so762_dir / "train.jsonl"
    out = tmp_path / "shards"
    assert main(["shard", str(manifest), "--out", str(out), "--shard-size", "100", "--no-progress"]) == 0
    expected = {u.id: u.text for u in read_manifest(manifest)}
    assert len(expected) == 1500
    tok = CharTokenizer.from_texts(expected.values())
    seen: Counter[str] = Counter()
    for rank in range(2):
        loader = make_loader(out / "train.index.jsonl", tokenizer=tok, num_workers=2, rank=rank, world_size=2,
                             batch_seconds=120.0, seed=7)
        loader.set_epoch(1)
        for batch in loader:
            assert len(batch) * max(batch.durations) <= 120.0
            assert batch.waves.shape == (len(batch), int(batch.wave_lengths.max()))
            for uid, text in zip(batch.ids, batch.texts):
                assert text == expected[uid]
                seen[uid] += 1
        assert loader.skipped == 0
    assert seen == Counter(list(expected))  # every utterance exactly once over the two ranks
