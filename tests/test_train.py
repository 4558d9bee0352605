"""Training end to end on real speech: overfitting, exact resume after SIGKILL, DDP on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from asr.checkpoint import CheckpointError, load_checkpoint, load_first_good
from asr.config import from_dict
from asr.data.manifest import read_manifest, write_manifest
from asr.distributed import resolve_device
from asr.errors import AsrError
from asr.recognizer import load_model
from asr.search import DecodeOptions
from asr.text import CharTokenizer
from asr.train import ExperimentConfig, Trainer, _checkpoint_candidates, ctc_weight_at, fit

REPO = Path(__file__).resolve().parents[1]


def tiny_config(manifest: Path, run_dir: Path, **sections) -> dict:
    """A small model on 40 mel bins; sections override the defaults (plain dicts, as YAML would)."""
    cfg = {
        "data": {"train": str(manifest), "dev": str(manifest),
                 "loader": {"batch_seconds": 30.0, "num_workers": 0, "shuffle_buffer": 16, "bucket_buffer": 16}},
        "out_dir": str(run_dir),
        "frontend": {"features": {"n_mels": 40}, "cmvn": "global"},
        "model": {
            "listener": {"layers": 2, "hidden": 64, "reduce": [2, 2], "projection": 64},
            "speller": {"embed_dim": 32, "hidden": 96, "attention": {"dim": 64, "conv_channels": 4, "conv_kernel": 15}},
            "ctc_weight": 0.2, "label_smoothing": 0.0,
        },
        "optim": {"lr": 3e-3, "schedule": "constant"},
        "train": {"epochs": 1000, "max_steps": 10, "log_every": 5, "plot_utterances": 2},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values} if isinstance(values, dict) else values
    return cfg


@pytest.fixture(scope="module")
def eight_utterances(tmp_path_factory, so762_dir: Path) -> Path:
    """The 8 shortest distinct speechocean762 training sentences, as a manifest with absolute paths."""
    utts = sorted(read_manifest(so762_dir / "train.jsonl"), key=lambda u: u.duration)
    chosen, texts = [], set()
    for utt in utts:
        if utt.text not in texts and len(utt.text.split()) >= 2:
            chosen.append(utt)
            texts.add(utt.text)
        if len(chosen) == 8:
            break
    path = tmp_path_factory.mktemp("eight") / "train.jsonl"
    write_manifest(chosen, path)
    return path


def _params(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.mark.slow
@pytest.mark.parametrize("subsample, query", [("concat", "current"), ("skip", "previous")], ids=["las", "espnet"])
def test_tiny_model_overfits_eight_real_utterances(eight_utterances, tmp_path, subsample, query):
    """The LAS paper's form and ESPnet's (frame skipping, the attention queried by the previous
    state) learn real speech and decode it greedily, by beam search (sharing siblings' attention in
    ESPnet's order) and in bfloat16."""
    torch.set_num_threads(2)
    config = tiny_config(eight_utterances, tmp_path / "run", train={"max_steps": 150, "validate_every": 75})
    config["model"]["listener"]["subsample"] = subsample
    config["model"]["speller"]["query"] = query
    cfg = from_dict(ExperimentConfig, config)
    fit(cfg)
    valid = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    valid = [r for r in valid if r["kind"] == "valid"]
    assert valid[-1]["dev_cer"] == 0.0, valid[-1]
    assert (tmp_path / "run" / "plots" / "attention.png").stat().st_size > 0
    assert (tmp_path / "run" / "plots" / "learning_curve.png").stat().st_size > 0
    # The checkpoint alone rebuilds the recognizer, which transcribes the files.
    recognizer = load_model(tmp_path / "run" / "last.pt")
    utts = read_manifest(eight_utterances)
    assert recognizer.transcribe([u.audio for u in utts[:3]]) == [u.text for u in utts[:3]]
    # Encoder and decoder in bfloat16 read them the same (beam search with CTC prefix scores too).
    half = load_model(tmp_path / "run" / "last.pt", dtype="bfloat16")
    assert half.transcribe([u.audio for u in utts]) == [u.text for u in utts]
    options = DecodeOptions(beam_size=4, ctc_weight=0.3)
    assert half.transcribe([u.audio for u in utts], options=options) == [u.text for u in utts]


def _train_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "asr", "train", str(config), *extra]


def test_sigkill_then_resume_matches_uninterrupted_run(eight_utterances, tmp_path):
    steps = 12
    # 4 batches an epoch, a checkpoint every 3 updates: the kill lands mid-epoch.
    base = tiny_config(eight_utterances, tmp_path / "x", data={"dev": None, "train": str(eight_utterances),
                       "loader": {"batch_seconds": 30.0, "max_batch_size": 2, "num_workers": 0,
                                  "shuffle_buffer": 4, "bucket_buffer": 4}},
                       train={"max_steps": steps, "checkpoint_every": 3, "validate_every": 1000, "log_every": 1},
                       frontend={"features": {"n_mels": 40}, "cmvn": "global",
                                 "specaug": {"freq_masks": 1, "freq_width": 5, "time_masks": 1}},
                       model={**tiny_config(eight_utterances, tmp_path)["model"],
                              "listener": {"layers": 2, "hidden": 32, "reduce": [2, 2], "projection": 32,
                                           "dropout": 0.1}})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    straight = tmp_path / "straight.yaml"
    straight.write_text(yaml.safe_dump({**base, "out_dir": str(tmp_path / "straight")}))
    subprocess.run(_train_cmd(straight), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed.yaml"
    run_dir = tmp_path / "killed"
    killed.write_text(yaml.safe_dump({**base, "out_dir": str(run_dir)}))
    proc = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "prev.pt").exists():  # at least two checkpoints written: kill mid-run
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    killed_at = load_first_good(_checkpoint_candidates(run_dir))[1]["train_state"]  # what the resumed run starts from
    assert killed_at["step"] < steps and killed_at["batch_in_epoch"] > 0

    subprocess.run(_train_cmd(killed), check=True, env=env, capture_output=True)  # resumes from last.pt
    resumed, reference = _params(run_dir / "last.pt"), _params(tmp_path / "straight" / "last.pt")
    assert load_checkpoint(run_dir / "last.pt")["train_state"]["step"] == steps
    for name in reference:
        assert torch.allclose(resumed[name], reference[name], atol=1e-6, rtol=0), name


def test_truncated_last_checkpoint_falls_back_to_previous(eight_utterances, tmp_path, caplog):
    cfg = from_dict(ExperimentConfig, tiny_config(
        eight_utterances, tmp_path / "run", data={"dev": None, "train": str(eight_utterances),
                                                  "loader": {"num_workers": 0, "batch_seconds": 8.0}},
        train={"max_steps": 4, "checkpoint_every": 2}))
    fit(cfg)
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    cfg = from_dict(ExperimentConfig, {**tiny_config(eight_utterances, tmp_path / "run",
                                                     data={"dev": None, "train": str(eight_utterances),
                                                           "loader": {"num_workers": 0, "batch_seconds": 8.0}}),
                                       "train": {"max_steps": 6, "checkpoint_every": 2}})
    with caplog.at_level("WARNING"):
        fit(cfg)
    assert "last.pt" in caplog.text and "skipping checkpoint" in caplog.text
    assert load_checkpoint(last)["train_state"]["step"] == 6


def test_time_budget_stops_early_with_a_checkpoint(eight_utterances, tmp_path):
    cfg = from_dict(ExperimentConfig, tiny_config(
        eight_utterances, tmp_path / "run", train={"max_steps": 0, "epochs": 1000, "max_minutes": 1e-4}))
    start = time.monotonic()
    fit(cfg)
    assert time.monotonic() - start < 60  # 1000 epochs would take far longer
    step = load_checkpoint(tmp_path / "run" / "last.pt")["train_state"]["step"]
    assert step <= 3  # the budget (6 ms) is spent after the first update at the latest


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_step_and_split_the_data(eight_utterances, tmp_path):
    config = tmp_path / "ddp.yaml"
    cfg = tiny_config(eight_utterances, tmp_path / "ddp", data={"dev": None, "train": str(eight_utterances),
                      "loader": {"batch_seconds": 6.0, "num_workers": 0, "shuffle_buffer": 4, "bucket_buffer": 4}},
                      train={"max_steps": 0, "epochs": 2, "log_every": 1, "device": "cpu"})
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "tests" / "ddp_worker.py"), str(config), str(tmp_path / "dump")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = [torch.load(tmp_path / "dump" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, tensor in ranks[0]["params"].items():
        assert torch.equal(tensor, ranks[1]["params"][name]), name
    all_ids = sorted(u.id for u in read_manifest(eight_utterances))
    for epoch in range(2):
        seen = [set(r["ids"][epoch]) for r in ranks]
        assert not seen[0] & seen[1]
        assert sorted(seen[0] | seen[1]) == all_ids


def test_a_rank_without_a_gpu_of_its_own_is_a_clear_error(monkeypatch):
    """Two processes on a one-GPU node: rank 1 must say so, not fail later with an invalid ordinal."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto", 0) == torch.device("cuda", 0)
    assert resolve_device("cuda", 0) == torch.device("cuda", 0)
    assert resolve_device("cpu", 1) == torch.device("cpu")
    for name in ("auto", "cuda", "cuda:1"):
        with pytest.raises(AsrError, match=r"local rank 1\).* only 1 CUDA device"):
            resolve_device(name, 1)


class _PoisonedLoss(torch.nn.Module):
    """Wraps a model so the loss of chosen calls is NaN (a stand-in for a numerically broken batch)."""

    def __init__(self, model, poisoned_calls):
        super().__init__()
        self.model, self.poisoned, self.calls = model, set(poisoned_calls), 0

    def forward(self, *args):
        out = self.model(*args)
        self.calls += 1
        if self.calls in self.poisoned or "all" in self.poisoned:
            out["loss"] = out["loss"] * float("nan")
        return out

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


@pytest.mark.parametrize("poisoned, fails", [({2, 3}, False), ({"all"}, True)])
def test_nonfinite_loss_skips_the_update_and_stops_when_persistent(eight_utterances, tmp_path, monkeypatch,
                                                                   caplog, poisoned, fails):
    import asr.train as train

    build = train.build_model
    monkeypatch.setattr(train, "build_model", lambda *a, **k: _PoisonedLoss(build(*a, **k), poisoned))
    cfg = from_dict(ExperimentConfig, tiny_config(
        eight_utterances, tmp_path / "run", data={"dev": None, "train": str(eight_utterances),
                                                  "loader": {"num_workers": 0, "batch_seconds": 8.0}},
        train={"max_steps": 6, "log_every": 1, "max_nonfinite": 4}))
    with caplog.at_level("WARNING"):
        if fails:
            with pytest.raises(train.TrainingError, match="non-finite for 4 updates in a row"):
                fit(cfg)
            return
        fit(cfg)
    assert caplog.text.count("non-finite gradient norm, update skipped") == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["nonfinite"] == 2 and log[-1]["step"] == 6


def test_best_checkpoints_are_ranked_by_the_chosen_dev_score(eight_utterances, tmp_path, caplog):
    run = tmp_path / "run"
    sections = {"train": {"max_steps": 8, "validate_every": 2, "keep_best": 2, "best_by": "cer"}}
    fit(from_dict(ExperimentConfig, tiny_config(eight_utterances, run, **sections)))
    valid = [r for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if r["kind"] == "valid"]
    assert len(valid) == 4
    state = load_checkpoint(run / "last.pt")["train_state"]
    by_cer = sorted((r["dev_cer"], f"best-step{r['step']}.pt") for r in valid)[:2]
    assert state["best_by"] == "cer" and [tuple(b) for b in state["best"]] == by_cer
    assert sorted(p.name for p in run.glob("best-step*.pt")) == sorted(name for _, name in by_cer)
    # Resumed with another score: a new ranking, the files of the old one are left alone.
    sections["train"].update(max_steps=10, best_by="loss")
    with caplog.at_level("INFO", logger="asr.train"):
        fit(from_dict(ExperimentConfig, tiny_config(eight_utterances, run, **sections)), resume=True)
    assert "ranked by dev loss from now on (were by dev cer)" in caplog.text
    state = load_checkpoint(run / "last.pt")["train_state"]
    assert state["best_by"] == "loss" and [name for _, name in state["best"]] == ["best-step10.pt"]
    assert all((run / name).exists() for _, name in by_cer)


def test_init_from_loads_the_weights_and_refuses_another_vocabulary_or_shape(eight_utterances, tmp_path):
    """Fine-tuning starts from a checkpoint's weights (CMVN included) at step 0; a checkpoint whose
    vocabulary or shapes differ is refused with the reason."""
    fit(from_dict(ExperimentConfig, tiny_config(eight_utterances, tmp_path / "source", train={"max_steps": 2})))
    source = tmp_path / "source" / "last.pt"
    trainer = Trainer(from_dict(ExperimentConfig, tiny_config(
        eight_utterances, tmp_path / "tuned", train={"max_steps": 2, "init_from": str(source)})), progress=False)
    try:
        assert trainer.state.step == 0
        theirs = load_checkpoint(source)["model"]
        for key, value in trainer.model.state_dict().items():
            assert torch.equal(value, theirs[key]), key
    finally:
        trainer.close()

    symbols = load_checkpoint(source)["vocab"]
    other_vocab = tmp_path / "vocab.txt"  # one character fewer
    CharTokenizer(symbols[:-1]).save(other_vocab)
    bad_vocab = tiny_config(eight_utterances, tmp_path / "bad", train={"init_from": str(source)})
    bad_vocab["data"]["vocab"] = str(other_vocab)
    with pytest.raises(CheckpointError, match="vocabulary"):
        Trainer(from_dict(ExperimentConfig, bad_vocab), progress=False)
    bad_shape = tiny_config(eight_utterances, tmp_path / "bad2", train={"init_from": str(source)})
    bad_shape["model"]["listener"]["hidden"] = 32
    with pytest.raises(CheckpointError, match=r"tensor listener\.rnns\.0\.weight_ih_l0 has shape"):
        Trainer(from_dict(ExperimentConfig, bad_shape), progress=False)


def test_ctc_weight_schedule_goes_from_start_to_the_model_weight(eight_utterances, tmp_path):
    assert [ctc_weight_at(s, 0.3, 0.9, 4) for s in range(6)] == pytest.approx([0.9, 0.75, 0.6, 0.45, 0.3, 0.3])
    cfg = from_dict(ExperimentConfig, tiny_config(eight_utterances, tmp_path / "run", train={
        "max_steps": 6, "log_every": 1, "ctc_weight_start": 1.0, "ctc_weight_steps": 4}))
    fit(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    logged = [r["ctc_weight"] for r in records if r["kind"] == "train"]
    # each record is written after its update: update k (1-based) used the weight of step k - 1
    assert logged == pytest.approx([ctc_weight_at(s, 0.2, 1.0, 4) for s in range(6)])
    with pytest.raises(AsrError, match="ctc_weight_start"):
        Trainer(from_dict(ExperimentConfig, tiny_config(eight_utterances, tmp_path / "x", model={"ctc_weight": 0.0},
                                                        train={"ctc_weight_start": 0.5})), progress=False)
