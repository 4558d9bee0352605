"""`asr demo` end to end at a tiny size, and the synthetic recipe's prepare with real speech added."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from asr.recipe import load_recipe
from asr.synth.voices import DEFAULT_TEST_VOICES, DEFAULT_TRAIN_VOICES, Voice

TINY = ["model.listener.hidden=32", "model.listener.projection=32", "model.speller.hidden=48",
        "model.speller.attention.dim=32"]


def _engines_missing() -> list[str]:
    return [v for v in DEFAULT_TRAIN_VOICES + DEFAULT_TEST_VOICES if not Voice.parse(v).available()]


@pytest.mark.skipif(bool(_engines_missing()), reason="TTS engines not installed (apt-get install espeak-ng flite "
                                                      "festival festvox-kallpc16k festvox-us-slt-hts)")
def test_demo_end_to_end_prints_scores_sample_and_paths(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "asr", "demo", "--out", str(out), "--sentences", "8", "--minutes", "0.05",
           "--no-progress", *[a for s in TINY for a in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stdout = proc.stdout
    assert "INFO" not in stdout  # logs go to stderr
    scores = re.findall(r"^test (greedy|beam10|beam10\+ctc0\.3): WER (\d+\.\d\d)% CER (\d+\.\d\d)% \((\d+) utterances\)$", stdout, re.M)
    assert [s[0] for s in scores] == ["greedy", "beam10", "beam10+ctc0.3"]  # the demo's model has a CTC head
    results = json.loads((out / "results.json").read_text())
    assert float(scores[0][1]) == pytest.approx(results["tests"]["test"]["greedy"]["wer"], abs=0.006)
    test_manifest = [json.loads(line) for line in (out / "data" / "test.jsonl").read_text().splitlines()]
    assert int(scores[0][3]) == len(test_manifest)
    assert f"reference:  {test_manifest[0]['text']}\n" in stdout
    assert re.search(r"^hypothesis: .*$", stdout, re.M)
    for label, path in (("model", out / "model.pt"), ("plots", out / "exp" / "plots"), ("report", out / "results.md")):
        assert f"{label + ':':<12}{path}\n" in stdout and path.exists()
    # Held-out voices never speak in training; the time budget ended training with a checkpoint.
    train_voices = {json.loads(line)["speaker"] for line in (out / "data" / "train.jsonl").read_text().splitlines()}
    assert train_voices.isdisjoint({u["speaker"] for u in test_manifest})
    assert (out / "exp" / "last.pt").is_file()


@pytest.mark.skipif(bool(_engines_missing()), reason="TTS engines not installed")
def test_demo_with_real_speech_trains_on_it_and_scores_its_dev_set(tmp_path, so762_dir):
    if not (so762_dir / "train.jsonl").is_file():
        pytest.skip(f"{so762_dir}: speechocean762 not found (set ASR_TEST_DATA)")
    from asr.data.manifest import read_manifest, write_manifest

    real = tmp_path / "real"  # the first utterances of speechocean762, absolute audio paths
    write_manifest(read_manifest(so762_dir / "train.jsonl")[:12], real / "train.jsonl")
    write_manifest(read_manifest(so762_dir / "dev.jsonl")[:5], real / "dev.jsonl")
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "asr", "demo", "--out", str(out), "--sentences", "6", "--minutes", "0.03",
           "--data", str(real), "--no-progress", *[a for s in TINY for a in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^real-dev greedy: WER \d+\.\d\d% CER \d+\.\d\d% \(5 utterances\)$", proc.stdout, re.M)
    train = [json.loads(line)["id"] for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert sum(i.startswith("so762_") for i in train) == 12 and len(train) > 12
    summary = json.loads((out / "eval" / "real-dev" / "greedy" / "summary.json").read_text())
    assert summary["utterances"] == 5


def _manifest(folder: Path, name: str, ids: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps({"id": i, "audio": f"audio/{i}.flac", "duration": 1.0,
                                                   "text": "a b", "speaker": "s"}) + "\n" for i in ids))


def test_synthetic_prepare_adds_real_training_speech_and_real_dev(tmp_path):
    _, module = load_recipe("synthetic")
    synth, real = tmp_path / "synth", tmp_path / "real"
    _manifest(synth, "train.jsonl", ["s1", "s2"])
    _manifest(synth, "test.jsonl", ["t1"])
    _manifest(real, "train.jsonl", ["r1", "r2", "r3"])
    _manifest(real, "dev.jsonl", ["d1"])
    only = module.prepare(synth, tmp_path / "a")
    assert sorted(only) == ["test", "train"]
    both = module.prepare(synth, tmp_path / "b", real=real)
    ids = {split: [json.loads(x)["id"] for x in Path(p).read_text().splitlines()] for split, p in both.items()}
    assert ids == {"train": ["s1", "s2", "r1", "r2", "r3"], "test": ["t1"], "real-dev": ["d1"]}
    assert json.loads(Path(both["real-dev"]).read_text())["audio"] == str((real / "audio" / "d1.flac").resolve())
    assert (module.TRAIN, module.DEV, module.TESTS) == ("train", "test", ("test", "real-dev"))
