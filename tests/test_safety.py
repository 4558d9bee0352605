"""Inputs a careless or hostile user can give that must neither run commands nor lose data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_models
import yaml

from asr.checkpoint import best_checkpoints, load_checkpoint, save_checkpoint
from asr.cli import main
from asr.config import from_dict
from asr.data.loader import make_loader
from asr.data.manifest import Utterance, write_manifest
from asr.data.shards import write_shards
from asr.data.sources import SourceError, resolve_source
from asr.folder_lock import FolderLock, FolderLockedError
from asr.train import ExperimentConfig, TrainingError, fit
from tests.test_shards import write_audio
from tests.test_train import tiny_config


@pytest.fixture()
def shard_dir(tmp_path: Path) -> Path:
    """A folder holding two real shards and their index."""
    utts = [Utterance(f"u{i}", str(write_audio(tmp_path / f"u{i}.wav", 0.3, seed=i)), 0.3, "a b", None)
            for i in range(3)]
    write_shards(utts, tmp_path / "shards", shard_size=2, progress=False)
    return tmp_path / "shards"


def _read_all(source) -> int:
    loader = make_loader(source, sample_rate=16000, shuffle=False, num_workers=0, rank=0, world_size=1,
                         batch_seconds=10.0)
    return sum(len(b.ids) for b in loader)


def test_a_shard_file_named_like_a_pipe_is_opened_as_a_file(shard_dir, monkeypatch) -> None:
    """`asr evaluate MODEL .` in a folder holding a tar named "pipe:touch pwned #.tar" ran `touch`."""
    (shard_dir / "train.index.jsonl").unlink()  # the folder is read by listing its *.tar files
    (shard_dir / "pipe:touch pwned #.tar").write_bytes(b"not a tar")
    monkeypatch.chdir(shard_dir)
    assert _read_all(".") == 3  # the odd file is a broken shard, nothing more
    assert not (shard_dir / "pwned").exists()


def test_an_index_row_naming_a_command_is_refused(shard_dir, monkeypatch) -> None:
    index = shard_dir / "train.index.jsonl"
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    rows[0]["shard"] = "pipe:touch pwned #"
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (shard_dir / "pipe:touch pwned #").write_bytes(b"")  # so that the existence check passes
    monkeypatch.chdir(shard_dir)
    for source in ("train.index.jsonl", "."):
        with pytest.raises(SourceError, match="not a plain file name"):
            _read_all(source)
    assert not (shard_dir / "pwned").exists()


@pytest.mark.parametrize("name", ["../elsewhere.tar", "/etc/passwd", "sub/x.tar", "http://host/x.tar"])
def test_an_index_row_naming_another_folder_or_a_url_is_refused(shard_dir, name) -> None:
    index = shard_dir / "train.index.jsonl"
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    rows[0]["shard"] = name
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SourceError, match="not a plain file name"):
        resolve_source(index)


def test_index_shards_resolve_against_the_index_folder(shard_dir, monkeypatch) -> None:
    monkeypatch.chdir(shard_dir)
    shards = resolve_source("train.index.jsonl").shards
    assert all(Path(s.url).is_absolute() and s.local for s in shards)
    assert _read_all("train.index.jsonl") == 3


# --- training run folders -------------------------------------------------------------------------

@pytest.fixture()
def noise_manifest(tmp_path: Path) -> Path:
    """Four short noise clips with texts: enough for a tiny model to take a few updates."""
    utts = [Utterance(f"n{i}", str(write_audio(tmp_path / f"n{i}.wav", 0.4 + 0.1 * i, seed=10 + i)),
                      0.4 + 0.1 * i, ["a b", "b a", "ab", "ba a"][i], None) for i in range(4)]
    path = tmp_path / "noise.jsonl"
    write_manifest(utts, path)
    return path


def _config(manifest: Path, run_dir: Path, **train) -> ExperimentConfig:
    cfg = tiny_config(manifest, run_dir, train={"max_steps": 2, "log_every": 1, "plot_utterances": 0, **train})
    cfg["data"]["loader"]["batch_seconds"] = 1.0
    return from_dict(ExperimentConfig, cfg)


def test_a_run_whose_checkpoints_all_fail_to_load_is_refused_not_overwritten(noise_manifest, tmp_path) -> None:
    run = tmp_path / "run"
    fit(_config(noise_manifest, run), progress=False)
    files = sorted(run.glob("*.pt"))
    assert files
    for path in files:  # say, written by a newer asr, or damaged
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="none of its checkpoints loads.*--no-resume"):
        fit(_config(noise_manifest, run, max_steps=4), progress=False)
    assert all(p.read_bytes() == b"not a checkpoint" for p in files)  # nothing overwritten
    fit(_config(noise_manifest, run, max_steps=4), resume=False, progress=False)  # the explicit fresh start
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 4


def test_best_list_names_outside_the_run_folder_are_never_opened_or_deleted(noise_manifest, tmp_path) -> None:
    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    victim.write_text("keep me")
    fit(_config(noise_manifest, run, keep_best=1), progress=False)
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["train_state"]["best"] = [[1e9, "../victim.txt"], [1e9, str(victim)], *ckpt["train_state"]["best"]]
    save_checkpoint({k: v for k, v in ckpt.items() if k != "format"}, run / "last.pt")
    assert all(p.parent == run for p in best_checkpoints(run))
    fit(_config(noise_manifest, run, keep_best=1, max_steps=4), progress=False)
    assert victim.read_text() == "keep me"
    assert all(name.startswith("best-step") for _, name in load_checkpoint(run / "last.pt")["train_state"]["best"])


def test_a_stray_copy_of_a_best_checkpoint_does_not_stop_a_resume(noise_manifest, tmp_path) -> None:
    run = tmp_path / "run"
    fit(_config(noise_manifest, run), progress=False)
    (run / "best-step24 (copy).pt").write_bytes(b"whatever")
    fit(_config(noise_manifest, run, max_steps=3), progress=False)
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 3


def test_a_second_training_into_a_locked_run_folder_stops_naming_the_holder(noise_manifest, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with FolderLock(run, "asr train other.yaml"):
        with pytest.raises(FolderLockedError, match=r"in use by process \d+ \(asr train other.yaml\)"):
            fit(_config(noise_manifest, run), progress=False)
        assert not (run / "last.pt").exists() and not (run / "config.yaml").exists()
    fit(_config(noise_manifest, run), progress=False)  # free again once the holder is gone
    assert (run / "last.pt").exists()


def test_two_processes_training_into_one_folder_one_exits_1(noise_manifest, tmp_path) -> None:
    """The lock across real processes: a holder process, then `asr train` into its folder."""
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from asr.folder_lock import FolderLock; "
                               "lock = FolderLock(sys.argv[1], 'holder'); print('locked', flush=True); time.sleep(60)",
                               str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump(tiny_config(noise_manifest, run, train={"max_steps": 1})))
        out = subprocess.run([sys.executable, "-m", "asr", "train", str(config), "--no-progress"],
                             capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 1
    assert re.search(rf"asr train: error: {re.escape(str(run))} is in use by process {holder.pid} \(holder\)",
                     out.stderr)
    assert "Traceback" not in out.stderr


def test_shards_into_a_locked_folder_are_refused(tmp_path) -> None:
    utts = [Utterance("u", str(write_audio(tmp_path / "u.wav", 0.3)), 0.3, "a", None)]
    out = tmp_path / "shards"
    out.mkdir()
    with FolderLock(out, "asr shard other.jsonl"):
        with pytest.raises(FolderLockedError, match="in use by process"):
            write_shards(utts, out, shard_size=1, progress=False)
    assert not list(out.glob("*.tar"))
    write_shards(utts, out, shard_size=1, progress=False)
    assert len(list(out.glob("*.tar"))) == 1


# --- evaluation with audio that cannot be read ------------------------------------------------------

TEXTS = ["one two", "three", "four five six", "seven"]


@pytest.fixture()
def eval_set(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny random model and a 4-utterance manifest of its texts."""
    utts = [Utterance(f"e{i}", str(write_audio(tmp_path / f"e{i}.wav", 0.5, seed=20 + i)), 0.5, t, None)
            for i, t in enumerate(TEXTS)]
    manifest = tmp_path / "test.jsonl"
    write_manifest(utts, manifest)
    return tiny_models.tiny_model(tmp_path / "tiny.pt", TEXTS), manifest


def _evaluate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *args, "--no-progress", "--json"])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_with_every_audio_file_missing_fails(eval_set, tmp_path, capsys) -> None:
    model, manifest = eval_set
    for wav in tmp_path.glob("e*.wav"):
        wav.unlink()
    code, out, err = _evaluate(capsys, str(model), str(manifest))
    assert code == 1
    assert json.loads(out)["missing"] == 4 and json.loads(out)["utterances"] == 0
    assert "asr evaluate: error:" in err and "4 of 4 utterances could not be read" in err
    code, out, _ = _evaluate(capsys, str(model), str(manifest), "--allow-missing")
    summary = json.loads(out)
    assert code == 0 and summary["wer"] == 100.0 and summary["deletions"] == summary["words"] == 7


def test_evaluate_with_half_the_audio_missing_says_so(eval_set, tmp_path, capsys) -> None:
    model, manifest = eval_set
    (tmp_path / "e1.wav").unlink()
    (tmp_path / "e3.wav").write_bytes(b"RIFF broken")
    code = main(["evaluate", str(model), str(manifest), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1 and "2 missing" in out and "2 of 4 utterances could not be read" in err
    code, out, _ = _evaluate(capsys, str(model), str(manifest), "--allow-missing")
    summary = json.loads(out)
    assert code == 0 and summary["missing"] == 2 and summary["utterances"] == 4  # 2 decoded, 2 as deletions


def test_evaluate_on_an_unreachable_shard_fails(eval_set, tmp_path, capsys) -> None:
    model, _ = eval_set
    bad = tmp_path / "gone.tar"
    bad.write_bytes(b"\0" * 10)  # exists, but no tar stream at all
    code, out, err = _evaluate(capsys, str(model), str(bad))
    assert code == 1 and json.loads(out)["missing"] >= 1 and "could not be read" in err
    assert "Traceback" not in err
