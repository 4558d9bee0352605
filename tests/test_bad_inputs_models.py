"""Bad inputs on the model side (transcribe, evaluate, average, train, recipe, plot-attention, demo):
each gives exit status 1 and one `asr <cmd>: error:` line naming the file and the problem, or a
named warning when the command rightly goes on; never a traceback or a silent wrong result.

The cases run in-process in a fresh folder holding links to shared assets: a tiny random model,
two short WAVs with a manifest, a two-step training run and a finished stub recipe. Disk-full and
read-only folders are emulated by making the writes under one folder fail with ENOSPC or EACCES
(the tests may run as root, whom permissions do not stop).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tiny_models
import torch
import yaml
from bad_inputs import Case, run_case

from asr.checkpoint import load_checkpoint, save_checkpoint
from asr.cli import main
from asr.config import from_dict
from asr.data.manifest import Utterance, write_manifest
from asr.recipe import RecipeOptions, run_recipe
from asr.train import ExperimentConfig, fit
from tests.test_recipes import STUB, TINY_CONFIG, write_jsonl_corpus
from tests.test_train import tiny_config

TEXTS = ["one two", "three"]
ASSETS: list[Path] = []  # the module's asset folder, once built
PATCHES: list[pytest.MonkeyPatch] = []  # the running case's monkeypatch, for the helpers below


# --- assets shared by the cases --------------------------------------------------------------------

def _noise(path: Path, seconds: float, seed: int) -> Path:
    samples = np.random.default_rng(seed).normal(0, 0.1, int(seconds * 16000)).astype(np.float32)
    sf.write(path, samples, 16000, subtype="PCM_16")
    return path


def _train_config(folder: Path) -> Path:
    """A two-step training config over four noise clips (tests/test_safety.py's), as YAML."""
    utts = [Utterance(f"n{i}", str(_noise(folder / f"n{i}.wav", 0.4 + 0.1 * i, 10 + i)), 0.4 + 0.1 * i,
                      ["a b", "b a", "ab", "ba a"][i], None) for i in range(4)]
    write_manifest(utts, folder / "noise.jsonl")
    cfg = tiny_config(folder / "noise.jsonl", folder / "run",
                      train={"max_steps": 2, "log_every": 1, "plot_utterances": 0})
    cfg["data"]["loader"]["batch_seconds"] = 1.0
    (folder / "train.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "train.yaml"


def _stub_recipe(folder: Path) -> None:
    """tests/test_recipes.py's stub recipe, run to the end once (two training steps) into folder/recipe_out."""
    (folder / "recipes" / "stub" / "conf").mkdir(parents=True)
    (folder / "recipes" / "stub" / "prepare.py").write_text(STUB)
    (folder / "recipes" / "stub" / "conf" / "las.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    write_jsonl_corpus(folder / "corpus", ("train", "dev", "test"))
    run_recipe(RecipeOptions("stub", folder / "corpus", folder / "recipe_out", recipes_dir=folder / "recipes",
                             progress=False, overrides=RECIPE_SETS))


RECIPE_SETS = ("train.max_steps=2",)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """The shared inputs, built once: model, WAVs, manifest, training config and run, stub recipe run."""
    folder = tmp_path_factory.mktemp("assets")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tiny_models.tiny_model(folder / "model.pt", TEXTS)
    _noise(folder / "a.wav", 0.5, 1)
    _noise(folder / "b.wav", 0.7, 2)
    write_manifest([Utterance("a", str(folder / "a.wav"), 0.5, "one two"),
                    Utterance("b", str(folder / "b.wav"), 0.7, "three")], folder / "test.jsonl")
    config = _train_config(folder)
    fit(from_dict(ExperimentConfig, yaml.safe_load(config.read_text())), progress=False)
    _stub_recipe(folder)
    torch.set_num_threads(before)
    ASSETS[:] = [folder]
    return folder


@pytest.fixture(autouse=True)
def _case_patches(monkeypatch):
    PATCHES[:] = [monkeypatch]
    yield
    PATCHES.clear()


# --- helpers the cases call while building their command line --------------------------------------

def asset(name: str) -> Path:
    return ASSETS[0] / name


def edited_model(folder: Path, name: str, edit) -> Path:
    """A copy of the tiny model with `edit(checkpoint dict)` applied, saved as folder/name."""
    ckpt = load_checkpoint(asset("model.pt"))
    edit(ckpt)
    save_checkpoint({k: v for k, v in ckpt.items() if k != "format"}, folder / name)
    return folder / name


def _wider_listener(ckpt: dict) -> None:  # the config builds a wider listener than the weights hold
    ckpt["config"]["model"]["listener"]["hidden"] = 24


def _drop_output_bias(ckpt: dict) -> None:
    del ckpt["model"]["speller.output.bias"]


def _unknown_config_key(ckpt: dict) -> None:
    ckpt["config"]["model"]["bogus"] = 1


def _nan_weight(ckpt: dict) -> None:
    ckpt["model"]["speller.output.bias"][3] = float("nan")


def _swapped_vocab(ckpt: dict) -> None:  # same size, two symbols swapped: every shape fits
    vocab = ckpt["vocab"]
    vocab[-1], vocab[-2] = vocab[-2], vocab[-1]


def _other_preemphasis(ckpt: dict) -> None:
    ckpt["config"]["frontend"]["features"]["preemphasis"] = 0.5


def bigger_vocab_model(folder: Path) -> Path:
    return tiny_models.tiny_model(folder / "other.pt", TEXTS + ["xyz"])


def a_file(folder: Path, name: str = "taken") -> Path:
    (folder / name).write_text("a file, not a folder\n")
    return folder / name


def a_folder(folder: Path, name: str = "taken") -> Path:
    (folder / name).mkdir()
    return folder / name


def _under(path, folder: Path) -> bool:
    if isinstance(path, int):
        return False
    path = os.path.abspath(os.fsdecode(os.fspath(path)))
    return path == str(folder) or path.startswith(str(folder) + os.sep)


def failing_writes(folder: Path, code: int) -> Path:
    """Make every creation or write under `folder` fail with OSError(code): EACCES for a read-only
    folder, ENOSPC for a full disk. Reads and everything outside `folder` work as usual."""
    folder.mkdir(parents=True, exist_ok=True)
    patch, message = PATCHES[0], os.strerror(code)
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def guarded_open(file, mode="r", *args, **kwargs):
        if _under(file, folder) and any(c in mode for c in "wax+"):
            raise OSError(code, message, str(file))
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if _under(path, folder) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, message, str(path))
        return real_os_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if _under(path, folder):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) if os.path.isdir(path) \
                else OSError(code, message, str(path))
        return real_mkdir(path, *args, **kwargs)

    patch.setattr(builtins, "open", guarded_open)
    patch.setattr(io, "open", guarded_open)
    patch.setattr(os, "open", guarded_os_open)
    patch.setattr(os, "mkdir", guarded_mkdir)
    return folder


def full_disk_in_torch_save() -> None:
    """torch.save fails as on a full disk, in the middle of writing a checkpoint."""
    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    PATCHES[0].setattr(torch, "save", save)


def full_disk_in_write_text(folder: Path) -> Path:
    """Path.write_text fails as on a full disk for files under `folder`."""
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if _under(self, folder):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    PATCHES[0].setattr(Path, "write_text", write_text)
    return folder


def no_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the case is about one without")


def transcribe(*args) -> list:
    return ["transcribe", asset("model.pt"), asset("a.wav"), "--no-progress", *args]


def evaluate(*args, model: Path | None = None) -> list:
    return ["evaluate", model or asset("model.pt"), asset("test.jsonl"), "--no-progress", *args]


def train(folder: Path, *sets: str, out: Path | None = None) -> list:
    """`asr train` of the assets' config into folder/out (or `out`), with extra `--set`s."""
    pairs = [x for item in (f"out_dir={out or folder / 'out'}", *sets) for x in ("--set", item)]
    return ["train", asset("train.yaml"), "--no-progress", *pairs]


def copy_of_run(folder: Path, stale: str | None = None) -> Path:
    """A copy of the assets' two-step run in folder/out (optionally with a stale temporary file)."""
    shutil.copytree(asset("run"), folder / "out")
    (folder / "out" / ".asr.lock").unlink(missing_ok=True)
    if stale:
        (folder / "out" / stale).write_bytes(b"half a checkpoint")
    return folder / "out"


def permuted_vocab(folder: Path) -> Path:
    """The run's vocabulary with its last two symbols swapped: every shape fits, every id means another character."""
    symbols = list(load_checkpoint(asset("run") / "last.pt")["vocab"])
    symbols[-1], symbols[-2] = symbols[-2], symbols[-1]
    from asr.text import CharTokenizer

    CharTokenizer(symbols).save(folder / "vocab.txt")
    return folder / "vocab.txt"


def recipe(folder: Path, *args: str, sets: tuple[str, ...] = ()) -> list:
    """`asr recipe stub` over a copy of the finished stub run, with the original --sets plus `sets`."""
    out = folder / "recipe_out"
    shutil.copytree(asset("recipe_out"), out)
    pairs = [x for item in (*RECIPE_SETS, *sets) for x in ("--set", item)]
    return ["recipe", "stub", "--data", asset("corpus"), "--out", out, "--recipes-dir", asset("recipes"),
            "--no-progress", *pairs, *args]


ENOSPC = r"no space left on device \(ENOSPC\)"
EACCES = r"permission denied \(EACCES\)"

CASES = [
    # transcribe: checkpoints that do not fit their own config, bad numbers, bad output folders
    Case("transcribe-weights-narrower-than-config", lambda f: ["transcribe", edited_model(f, "wide.pt", _wider_listener),
         asset("a.wav")], r"wide\.pt: tensor listener\.\S+ has shape \(\d+(, \d+)*\) there and \(\d+(, \d+)*\) in"),
    Case("transcribe-weights-missing-a-tensor", lambda f: ["transcribe", edited_model(f, "cut.pt", _drop_output_bias),
         asset("a.wav")], r"cut\.pt: tensor speller\.output\.bias exists only in the model"),
    Case("transcribe-config-with-unknown-key", lambda f: ["transcribe", edited_model(f, "odd.pt", _unknown_config_key),
         asset("a.wav")], r"odd\.pt: its config cannot build a model: unknown key .*bogus"),
    Case("transcribe-device-tpu", lambda f: transcribe("--device", "tpu"), r"--device 'tpu': not a device"),
    Case("transcribe-device-garbled", lambda f: transcribe("--device", "cuda:x"), r"--device 'cuda:x': not a device"),
    Case("transcribe-threads-negative", lambda f: transcribe("--threads", "-1"), r"--threads -1: give 1 or more"),
    Case("transcribe-threads-zero", lambda f: transcribe("--threads", "0"), r"--threads 0: give 1 or more"),
    Case("transcribe-max-segment-nan", lambda f: transcribe("--max-segment", "nan"),
         r"--max-segment nan: not a finite number"),
    Case("transcribe-vad-threshold-nan", lambda f: transcribe("--vad-threshold", "nan"),
         r"--vad-threshold nan: not a finite number"),
    Case("transcribe-batch-seconds-nan", lambda f: transcribe("--batch-seconds", "nan"),
         r"--batch-seconds nan: not a finite number"),
    Case("transcribe-max-len-ratio-nan", lambda f: transcribe("--max-len-ratio", "nan"),
         r"--max-len-ratio nan: not a finite number"),
    Case("transcribe-length-penalty-inf", lambda f: transcribe("--length-penalty", "inf"),
         r"--length-penalty inf: not a finite number"),
    Case("transcribe-output-dir-is-a-file", lambda f: transcribe("--output-dir", a_file(f)),
         r"--output-dir \S+taken: exists and is not a folder"),
    Case("transcribe-output-dir-read-only", lambda f: transcribe("--output-dir", failing_writes(f / "ro", errno.EACCES)),
         rf"--output-dir \S+ro: cannot write there: {EACCES}"),
    Case("transcribe-output-disk-full", lambda f: transcribe("--output-dir", full_disk_in_write_text(f / "out")),
         rf"out/a\.txt: not written: {ENOSPC}"),
    # evaluate
    Case("evaluate-weights-narrower-than-config",
         lambda f: evaluate(model=edited_model(f, "wide.pt", _wider_listener)), r"wide\.pt: tensor \S+ has shape"),
    Case("evaluate-device-tpu", lambda f: evaluate("--device", "tpu"), r"--device 'tpu': not a device"),
    Case("evaluate-threads-negative", lambda f: evaluate("--threads", "-1"), r"--threads -1: give 1 or more"),
    Case("evaluate-eos-threshold-nan", lambda f: evaluate("--eos-threshold", "nan"),
         r"--eos-threshold nan: not a finite number"),
    Case("evaluate-report-is-a-file", lambda f: evaluate("--report", a_file(f)),
         r"--report \S+taken: exists and is not a folder"),
    Case("evaluate-report-read-only", lambda f: evaluate("--report", failing_writes(f / "ro", errno.EACCES)),
         rf"--report \S+ro: cannot write there: {EACCES}"),
    Case("evaluate-report-disk-full", lambda f: evaluate("--report", _full_report_folder(f)),
         rf"report not written: {ENOSPC}"),
    # average: checkpoints of different networks, non-finite weights, bad outputs
    Case("average-different-shapes", lambda f: ["average", asset("model.pt"), bigger_vocab_model(f), "--out", f / "m.pt"],
         r"other\.pt: cannot be averaged with \S+model\.pt: tensor \S+ has shape"),
    Case("average-same-shapes-other-vocabulary", lambda f: ["average", asset("model.pt"),
         edited_model(f, "swapped.pt", _swapped_vocab), "--out", f / "m.pt"],
         r"swapped\.pt: cannot be averaged with \S+model\.pt: their vocabularies differ"),
    Case("average-other-frontend-config", lambda f: ["average", asset("model.pt"),
         edited_model(f, "pre.pt", _other_preemphasis), "--out", f / "m.pt"],
         r"pre\.pt: cannot be averaged with \S+model\.pt: their model configs differ "
         r"\(frontend\.features\.preemphasis: 0\.97 -> 0\.5\)"),
    Case("average-nan-weights", lambda f: ["average", asset("model.pt"), edited_model(f, "nan.pt", _nan_weight),
         "--out", f / "m.pt"], r"nan\.pt: tensor speller\.output\.bias holds non-finite values"),
    Case("average-out-is-a-folder", lambda f: ["average", asset("model.pt"), "--out", a_folder(f)],
         r"--out \S+taken: is a folder; give a file name"),
    Case("average-out-read-only", lambda f: ["average", asset("model.pt"), "--out",
         failing_writes(f / "ro", errno.EACCES) / "m.pt"], rf"cannot write there: {EACCES}"),
    Case("average-disk-full", lambda f: [full_disk_in_torch_save(), "average", asset("model.pt"), "--out",
         f / "m.pt"][1:], rf"m\.pt: not written: {ENOSPC}"),
    # train: settings out of range, devices that are not there, resumes that do not fit
    Case("train-lr-negative", lambda f: train(f, "optim.lr=-1"), r"optim\.lr must be a positive finite number, got -1"),
    Case("train-lr-zero", lambda f: train(f, "optim.lr=0"), r"optim\.lr must be a positive finite number, got 0"),
    Case("train-beta-above-one", lambda f: train(f, "optim.betas=[0.9, 1.5]"), r"optim\.betas must be in \[0, 1\)"),
    Case("train-grad-clip-negative", lambda f: train(f, "optim.grad_clip=-1"),
         r"optim\.weight_decay and optim\.grad_clip must be finite numbers >= 0, got 0\.0, -1"),
    Case("train-accum-steps-zero", lambda f: train(f, "optim.accum_steps=0"), r"optim\.accum_steps must be >= 1"),
    Case("train-no-epochs-negative-steps", lambda f: train(f, "train.epochs=0", "train.max_steps=-5"),
         r"train\.epochs must be >= 1, got 0 \(nothing would be trained\)"),
    Case("train-negative-max-steps", lambda f: train(f, "train.max_steps=-5"),
         r"train\.max_steps and train\.max_minutes must be >= 0 .*got -5"),
    Case("train-negative-max-minutes", lambda f: train(f, "train.max_minutes=-1"),
         r"train\.max_steps and train\.max_minutes must be >= 0 .*got 2 and -1"),
    Case("train-log-every-zero", lambda f: train(f, "train.log_every=0"), r"train\.log_every .* must be >= 1"),
    Case("train-device-tpu", lambda f: train(f, "train.device=tpu"), r"train\.device 'tpu': not a device"),
    Case("train-device-cuda-without-gpu", lambda f: [no_cuda(), *train(f, "train.device=cuda")][1:],
         r"train\.device 'cuda': CUDA is not available on this machine"),
    Case("train-out-dir-read-only", lambda f: train(f, out=failing_writes(f / "ro", errno.EACCES)),
         rf"out_dir \S+ro: cannot write there: {EACCES}"),
    Case("train-disk-full-at-checkpoint", lambda f: [full_disk_in_torch_save(), *train(f)][1:],
         rf"out/last\.pt: not written: {ENOSPC}"),
    Case("train-resume-wider-model", lambda f: [copy_of_run(f), *train(f, "model.listener.hidden=32")][1:],
         r"out/last\.pt: tensor listener\.\S+ has shape .* the config's model is not the one this run trains"),
    Case("train-resume-without-ctc-head", lambda f: [copy_of_run(f), *train(f, "model.ctc_weight=0")][1:],
         r"out/last\.pt: tensor ctc\.\S+ exists only in the checkpoint"),
    Case("train-resume-permuted-vocabulary", lambda f: [copy_of_run(f), *train(f, f"data.vocab={permuted_vocab(f)}")][1:],
         r"out/last\.pt: its vocabulary \(\d+ symbols\) differs from this run's \(\d+\): the same symbols in another order"),
    Case("train-resume-other-optimizer", lambda f: [copy_of_run(f), *train(f, "optim.name=adadelta")][1:],
         r"out/last\.pt: trained with optim\.name=adam, the config says adadelta"),
    # train: warnings where the run rightly goes on
    Case("train-amp-bf16-on-cpu", lambda f: [no_cuda(), *train(f, "train.amp=bf16", "train.max_steps=1")][1:],
         r"train\.amp=bf16 has no effect: mixed precision applies on CUDA only and this run is on cpu", code=0),
    Case("train-stale-temporary-removed", lambda f: [copy_of_run(f, ".last.pt.k2j4x9.tmp"),
         *train(f, "train.max_steps=3")][1:],
         r"removed 1 temporary file\(s\) left by an interrupted checkpoint write: \.last\.pt\.k2j4x9\.tmp", code=0),
    Case("train-resume-with-nothing-left", lambda f: [copy_of_run(f), *train(f)][1:],
         r"nothing was trained: the run resumed at step 2, which reaches train\.max_steps \(2\)", code=0),
    # recipe: a rerun with other settings must not keep the old outputs and reprint old results
    Case("recipe-rerun-with-another-lr", lambda f: recipe(f, sets=("optim.lr=0.001",)),
         r"stage train ran with \(optim\.lr: 0\.003 -> 0\.001\); .*rerun with --stage train"),
    Case("recipe-rerun-with-another-normaliser", lambda f: recipe(f, sets=("text.lowercase=false",)),
         r"stage vocab ran with \(text\.lowercase: True -> False\); .*rerun with --stage vocab"),
    Case("recipe-stage-after-a-changed-one", lambda f: recipe(f, "--stage", "evaluate", sets=("model.ctc_weight=0.5",)),
         r"stage train ran with \(model\.ctc_weight: 0\.2 -> 0\.5\); .*rerun with --stage train"),
    Case("recipe-rerun-with-another-shard-size", lambda f: recipe(f, "--shard-size", "7"),
         r"stage shard ran with \(--shard-size: 1000 -> 7\); .*rerun with --stage shard"),
    Case("recipe-out-is-a-file", lambda f: ["recipe", "stub", "--data", asset("corpus"), "--out", a_file(f),
         "--recipes-dir", asset("recipes")], r"--out \S+taken: exists and is not a folder"),
    # plot-attention and demo outputs
    Case("plot-attention-out-is-a-folder", lambda f: ["plot-attention", asset("model.pt"), asset("a.wav"), "--out",
         a_folder(f)], r"--out \S+taken: is a folder; give a file name"),
    Case("demo-out-is-a-file", lambda f: ["demo", "--out", a_file(f), "--no-progress"],
         r"--out \S+taken: exists and is not a folder"),
]


def _full_report_folder(folder: Path) -> Path:
    """A report folder that exists and can be probed, whose report files meet a full disk."""
    report = folder / "report"
    report.mkdir()
    real = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if _under(file, report) and any(c in mode for c in "wax+"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(file, mode, *args, **kwargs)

    PATCHES[0].setattr(builtins, "open", guarded_open)
    return report


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case: Case, assets: Path, tmp_path: Path, capsys, caplog, one_thread) -> None:
    run_case(case, tmp_path, capsys, caplog)


def test_the_table_names_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES) >= 30


# --- what the table cannot show: files left behind, logs, signals, progress bars -------------------

def test_a_failed_checkpoint_write_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    def save(obj, f, *args, **kwargs):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save)
    from asr.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=ENOSPC):
        save_checkpoint({"model": {}}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_stale_temporary_is_removed_and_other_files_kept(assets, tmp_path, one_thread) -> None:
    run = copy_of_run(tmp_path, ".last.pt.abc123.tmp")
    (run / "notes.tmp").write_text("mine")
    assert main([str(a) for a in train(tmp_path, "train.max_steps=3")]) == 0
    assert not (run / ".last.pt.abc123.tmp").exists() and (run / "notes.tmp").read_text() == "mine"


def test_a_resume_drops_the_log_records_after_its_checkpoint(assets, tmp_path, one_thread) -> None:
    """A run killed after its last checkpoint logged steps 3 and 4; the resumed run logs them again."""
    run = copy_of_run(tmp_path)
    log = run / "train_log.jsonl"
    lines = log.read_text().splitlines()
    assert max(json.loads(line)["step"] for line in lines) == 2
    log.write_text("\n".join(lines + [json.dumps({"kind": "train", "step": 3}), json.dumps({"kind": "train", "step": 4}),
                                      '{"kind": "train", "st']) + "\n")
    assert main([str(a) for a in train(tmp_path, "train.max_steps=4")]) == 0
    steps = [(r["kind"], r["step"]) for r in map(json.loads, log.read_text().splitlines())]
    assert len(steps) == len(set(steps)), steps
    assert [s for k, s in steps if k == "train"] == [1, 2, 3, 4]


def test_a_refused_resume_leaves_the_run_config_as_it_was(assets, tmp_path, one_thread) -> None:
    run = copy_of_run(tmp_path)
    before = (run / "config.yaml").read_text()
    assert main([str(a) for a in train(tmp_path, "model.listener.hidden=32")]) == 1
    assert (run / "config.yaml").read_text() == before


def test_sigterm_writes_a_checkpoint_at_the_next_update_and_exits_143(assets, tmp_path) -> None:
    run = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    argv = [str(a) for a in train(tmp_path, "train.max_steps=100000", "train.validate_every=100000")]
    proc = subprocess.Popen([sys.executable, "-m", "asr", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _logged_steps(run / "train_log.jsonl") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _logged_steps(run / "train_log.jsonl"), "training never logged a step"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "asr train: stopped by SIGTERM at step" in err
    step = load_checkpoint(run / "last.pt")["train_state"]["step"]
    assert step == max(_logged_steps(run / "train_log.jsonl")) and step >= 1
    assert not list(run.glob(".*.tmp"))


def _logged_steps(path: Path) -> list[int]:
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            pass
    return steps


def test_transcribe_progress_never_passes_its_total(assets, tmp_path, monkeypatch, recwarn, one_thread) -> None:
    """A 0.3333 s file made the bar's rounded total 0.33 s, then 101 % and tqdm's "clamping frac" warning."""
    import tqdm

    shown = tqdm.tqdm.__init__

    def at_once(self, *args, **kwargs):  # show the bar from the start (the command waits 1 s)
        kwargs["delay"] = 0
        shown(self, *args, **kwargs)

    monkeypatch.setattr(tqdm.tqdm, "__init__", at_once)
    _noise(tmp_path / "short.wav", 0.3333, 3)
    assert main(["transcribe", str(assets / "model.pt"), str(tmp_path / "short.wav"), str(assets / "b.wav")]) == 0
    assert not [w for w in recwarn if "clamping" in str(w.message)]


def test_the_options_are_exported_from_the_package_root() -> None:
    import asr
    from asr.search import DecodeOptions
    from asr.transcribe import TranscribeOptions

    assert asr.DecodeOptions is DecodeOptions and asr.TranscribeOptions is TranscribeOptions
    assert {"DecodeOptions", "TranscribeOptions", "load_model", "Recognizer"} <= set(asr.__all__) <= set(dir(asr))
