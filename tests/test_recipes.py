"""Recipes: each prepare() on a tiny copy of its corpus's layout, and the resumable stage runner."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.cli import main
from asr.data.manifest import read_manifest
from asr.recipe import STAGES, RecipeOptions, default_recipes_dir, load_recipe, run_recipe

RATE = 16000
RECIPES = ("librispeech", "an4", "commonvoice", "timit", "fsdd", "speechocean762")


def tone(seconds: float = 0.5, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A quiet tone plus noise, float32 in [-1, 1]."""
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write_audio(path: Path, seconds: float = 0.5, seed: int = 0, **kwargs) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = tone(seconds, 300 + 50 * seed, seed)
    sf.write(path, wave, RATE, **kwargs)
    return wave


def by_id(path: Path) -> dict:
    return {u.id: u for u in read_manifest(path)}


def prepare_of(name: str):
    return load_recipe(name)[1]


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_its_files_and_split_names(name):
    folder, module = load_recipe(name)
    assert (folder / "conf" / "las.yaml").is_file() and (folder / "README.md").is_file()
    assert isinstance(module.TRAIN, str) and isinstance(module.DEV, str) and module.TESTS
    from asr.config import load_config
    from asr.train import ExperimentConfig
    load_config(ExperimentConfig, folder / "conf" / "las.yaml")  # values fit the dataclasses


def test_librispeech_prepare(tmp_path):
    root = tmp_path / "corpus" / "LibriSpeech"
    layout = {"train-clean-100": ("19", "198"), "train-clean-360": ("100", "200"), "dev-clean": ("84", "121123"),
              "dev-other": ("116", "288045"), "test-clean": ("1089", "134686"), "test-other": ("1688", "142285")}
    for n, (subset, (spk, chapter)) in enumerate(layout.items()):
        folder = root / subset / spk / chapter
        lines = []
        for k in range(2):
            uid = f"{spk}-{chapter}-{k:04d}"
            write_audio(folder / f"{uid}.flac", 0.5 + 0.25 * k, seed=n)
            lines.append(f"{uid} HE HOPED THERE WOULD BE STEW FOR DINNER {k}")
        (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    module = prepare_of("librispeech")
    out = module.prepare(tmp_path / "corpus", tmp_path / "out", subsets="train-clean-100")
    assert set(out) == {"train", "dev-clean", "dev-other", "test-clean", "test-other"}
    assert module.TRAIN == "train" and module.DEV == "dev-clean" and "test-clean" in module.TESTS
    train = by_id(out["train"])
    assert list(train) == ["19-198-0000", "19-198-0001"]
    utt = train["19-198-0001"]
    assert utt.text == "he hoped there would be stew for dinner 1" and utt.speaker == "19"
    assert utt.duration == pytest.approx(0.75) and Path(utt.audio).is_absolute() and Path(utt.audio).is_file()
    assert set(by_id(out["test-other"])) == {"1688-142285-0000", "1688-142285-0001"}
    # Without `subsets`, every train-* subset present is used (here 100 + 360).
    both = module.prepare(root, tmp_path / "out2")
    assert {u.speaker for u in read_manifest(both["train"])} == {"19", "100"}


def write_raw_bigendian(path: Path, seed: int) -> np.ndarray:
    """An AN4 .raw file: 16 kHz 16-bit big-endian samples, no header; returns the int16 samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = (tone(0.5, 300 + 50 * seed, seed) * 32767).astype(np.int16)
    path.write_bytes(samples.astype(">i2").tobytes())
    return samples


def test_an4_prepare_raw_and_sphere(tmp_path):
    an4 = tmp_path / "an4"
    train_ids = [("fash", "an251-fash-b", "RUBOUT G M E F THREE NINE"), ("fash", "an253-fash-b", "GO"),
                 ("fbbh", "an86-fbbh-b", "ENTER SIX TWO"), ("mblb", "cen1-mblb-b", "YES")]
    raws = {}
    for n, (spk, uid, _) in enumerate(train_ids):
        raws[uid] = write_raw_bigendian(an4 / "wav" / "an4_clstk" / spk / f"{uid}.raw", n)
    test_wave = write_audio(an4 / "wav" / "an4test_clstk" / "fcaw" / "cen1-fcaw-b.sph", seed=7,
                            format="NIST", subtype="PCM_16")
    (an4 / "etc").mkdir(parents=True)
    (an4 / "etc" / "an4_train.transcription").write_text(
        "".join(f"<s> {text} </s> ({uid})\n" for _, uid, text in train_ids))
    (an4 / "etc" / "an4_test.transcription").write_text("<s> ONE TWO </s> (cen1-fcaw-b)\n")
    (an4 / "etc" / "an4_train.fileids").write_text("".join(f"an4_clstk/{s}/{u}\n" for s, u, _ in train_ids))
    module = prepare_of("an4")
    out = module.prepare(tmp_path, tmp_path / "out")
    assert set(out) == {"train", "dev", "test"} and module.TESTS == ("test",)
    dev, train, test = by_id(out["dev"]), by_id(out["train"]), by_id(out["test"])
    assert set(dev) == {"an251-fash-b", "an253-fash-b"}  # the first speaker in sorted order is held out
    assert set(train) == {"an86-fbbh-b", "cen1-mblb-b"}
    assert dev["an251-fash-b"].text == "rubout g m e f three nine" and dev["an251-fash-b"].speaker == "fash"
    # .raw is converted to FLAC holding the very same samples; .sph is used in place.
    flac = Path(train["an86-fbbh-b"].audio)
    assert flac.suffix == ".flac" and flac.is_relative_to(tmp_path / "out" / "audio")
    decoded, rate = sf.read(flac, dtype="int16")
    assert rate == RATE and np.array_equal(decoded, raws["an86-fbbh-b"])
    assert train["an86-fbbh-b"].duration == pytest.approx(0.5)
    utt = test["cen1-fcaw-b"]
    assert utt.audio.endswith(".sph") and utt.text == "one two" and utt.speaker == "fcaw"
    assert utt.duration == pytest.approx(test_wave.size / RATE)


def test_commonvoice_prepare(tmp_path):
    lang = tmp_path / "cv-corpus-15.0-2023-09-08" / "en"
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment\n"
    for n, split in enumerate(("train", "dev", "test")):
        rows = []
        for k in range(2):
            clip = f"common_voice_en_{n}{k}.mp3"
            write_audio(lang / "clips" / clip, 0.5 + 0.5 * k, seed=k, format="MP3")
            rows.append(f"spk{n}\t{clip}\t\"Hello,\" she said {k}.\t2\t0\t\t\t\ten\t\n")
        rows.append(f"spk{n}\tcommon_voice_en_empty.mp3\t\t2\t0\t\t\t\ten\t\n")  # no sentence: skipped
        (lang / f"{split}.tsv").write_text(header + "".join(rows))
    module = prepare_of("commonvoice")
    out = module.prepare(tmp_path, tmp_path / "out")
    assert set(out) == {"train", "dev", "test"} and module.DEV == "dev"
    test = by_id(out["test"])
    assert list(test) == ["common_voice_en_20", "common_voice_en_21"]
    utt = test["common_voice_en_21"]
    assert utt.text == '"Hello," she said 1.' and utt.speaker == "spk2"
    assert utt.duration == pytest.approx(1.0, abs=0.06)  # mp3 frames may pad the end a little


def write_timit_utt(folder: Path, sentence: str, text: str, seed: int) -> None:
    wave = write_audio(folder / f"{sentence}.WAV", seed=seed, format="NIST", subtype="PCM_16")
    (folder / f"{sentence}.TXT").write_text(f"0 {wave.size} {text}\n")


def test_timit_prepare(tmp_path):
    root = tmp_path / "TIMIT"
    speakers = {("TRAIN", "DR1", "FCJF0"), ("TRAIN", "DR1", "MCPM0"), ("TEST", "DR1", "MDAB0"),
                ("TEST", "DR2", "MABC0")}
    for n, (part, dr, spk) in enumerate(sorted(speakers)):
        folder = root / part / dr / spk
        write_timit_utt(folder, "SA1", "She had your dark suit in greasy wash water all year.", n)
        write_timit_utt(folder, "SI1027", "Even then, if she took one step forward he could catch her.", n)
        write_timit_utt(folder, "SX127", "Don't ask me to carry an oily rag like that - at all.", n)
    module = prepare_of("timit")
    out = module.prepare(tmp_path, tmp_path / "out")
    assert set(out) == {"train", "dev", "test", "test-complete"} and module.TESTS == ("test", "test-complete")
    assert set(by_id(out["dev"])) == {"FCJF0_SI1027", "FCJF0_SX127"}  # first train speaker held out
    assert set(by_id(out["train"])) == {"MCPM0_SI1027", "MCPM0_SX127"}  # SA sentences left out
    assert set(by_id(out["test"])) == {"MDAB0_SI1027", "MDAB0_SX127"}  # core test speakers only
    assert len(by_id(out["test-complete"])) == 4
    utt = by_id(out["test"])["MDAB0_SX127"]
    assert utt.text == "don't ask me to carry an oily rag like that at all" and utt.speaker == "MDAB0"
    assert by_id(out["train"])["MCPM0_SI1027"].text == "even then if she took one step forward he could catch her"
    assert utt.duration == pytest.approx(0.5)


def write_jsonl_corpus(root: Path, splits: tuple[str, ...]) -> None:
    """The JSON Lines layout of the shared data: <split>.jsonl with audio relative to the folder."""
    for n, split in enumerate(splits):
        lines = []
        for k in range(2):
            rel = f"audio/spk{k}/{split}_{k}.flac"
            write_audio(root / rel, seed=n + k)
            lines.append(json.dumps({"id": f"{split}_{k}", "audio": rel, "duration": 0.5,
                                     "text": ["zero", "one"][k], "speaker": f"spk{k}"}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name, splits, dev", [("fsdd", ("train", "test"), "test"),
                                               ("speechocean762", ("train", "dev"), "dev")])
def test_jsonl_recipes_copy_manifests_with_absolute_paths(tmp_path, name, splits, dev):
    write_jsonl_corpus(tmp_path / "data", splits)
    module = prepare_of(name)
    out = module.prepare(tmp_path / "data", tmp_path / "out")
    assert set(out) == set(splits) and module.DEV == dev
    for split in splits:
        utts = read_manifest(out[split])
        assert [u.id for u in utts] == [f"{split}_0", f"{split}_1"]
        assert [u.text for u in utts] == ["zero", "one"] and [u.speaker for u in utts] == ["spk0", "spk1"]
        assert utts[1].audio == str((tmp_path / "data" / f"audio/spk1/{split}_1.flac").resolve())
        raw = json.loads(out[split].read_text().splitlines()[0])
        assert Path(raw["audio"]).is_absolute()  # the copy does not depend on where it is kept


# --- the stage runner ----------------------------------------------------------------------------

STUB = '''
from pathlib import Path
from asr.recipe import copy_manifests

TRAIN, DEV, TESTS = "train", "dev", ("test",)


def prepare(data_dir, out_dir):
    out = copy_manifests(data_dir, out_dir, ("train", "dev", "test"), required=("train", "dev", "test"))
    with open(Path(out_dir) / "calls.txt", "a") as f:  # counts the calls, for the resume test
        f.write("prepare\\n")
    return out
'''

TINY_CONFIG = {
    "data": {"train": "set-by-the-runner",
             "loader": {"batch_seconds": 30.0, "num_workers": 0, "shuffle_buffer": 16, "bucket_buffer": 16}},
    "frontend": {"features": {"n_mels": 40}, "cmvn": "global"},
    "model": {"listener": {"layers": 2, "hidden": 32, "reduce": [2, 2], "projection": 32},
              "speller": {"embed_dim": 16, "hidden": 32, "attention": {"dim": 32, "conv_channels": 4, "conv_kernel": 15}},
              "ctc_weight": 0.2, "label_smoothing": 0.0},
    "optim": {"lr": 3e-3, "schedule": "constant"},
    "train": {"epochs": 1000, "max_steps": 3, "log_every": 1, "plot_utterances": 1},
}


@pytest.fixture
def stub(tmp_path) -> tuple[Path, Path]:
    """(recipes folder holding the `stub` recipe, its corpus in the JSON Lines layout)."""
    import yaml

    folder = tmp_path / "recipes" / "stub"
    (folder / "conf").mkdir(parents=True)
    (folder / "prepare.py").write_text(STUB)
    (folder / "conf" / "las.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    write_jsonl_corpus(tmp_path / "corpus", ("train", "dev", "test"))
    return tmp_path / "recipes", tmp_path / "corpus"


def markers(out: Path) -> dict[str, float]:
    return {p.name.removesuffix(".done"): p.stat().st_mtime_ns for p in (out / "stages").glob("*.done")}


def test_runner_runs_every_stage_and_resumes_after_a_failure(stub, tmp_path, monkeypatch, one_thread):
    import asr.recipe as recipe

    recipes_dir, corpus = stub
    out = tmp_path / "out"
    options = RecipeOptions("stub", corpus, out, recipes_dir=recipes_dir, progress=False,
                            overrides=("train.max_steps=3",))

    def fail(run):
        raise RuntimeError("interrupted")

    monkeypatch.setitem(recipe.STAGE_FUNCTIONS, "evaluate", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_recipe(options)
    before = markers(out)
    assert set(before) == set(STAGES[:STAGES.index("evaluate")])
    assert (out / "model.pt").is_file() and (out / "shards" / "train").is_dir() and (out / "vocab.txt").is_file()
    last = (out / "exp" / "last.pt").stat().st_mtime_ns
    monkeypatch.undo()

    results = run_recipe(options)  # continues at `evaluate`, redoing nothing before it
    assert (out / "data" / "calls.txt").read_text() == "prepare\n"
    assert (out / "exp" / "last.pt").stat().st_mtime_ns == last
    after = markers(out)
    assert set(after) == set(STAGES) and all(after[s] == before[s] for s in before)
    assert set(results["tests"]) == {"test"} and set(results["tests"]["test"]) == {"greedy", "beam10", "beam10+ctc0.3"}
    greedy = results["tests"]["test"]["greedy"]
    assert greedy["utterances"] == 2 and 0.0 <= greedy["cer"]
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "eval" / "test" / "beam10" / "summary.json").is_file()
    with_ctc = json.loads((out / "eval" / "test" / "beam10+ctc0.3" / "summary.json").read_text())
    assert with_ctc["decode_options"]["ctc_weight"] == 0.3 and with_ctc["decode_options"]["beam_size"] == 10
    assert "| test | greedy | 2 |" in (out / "results.md").read_text()
    assert read_manifest(out / "data" / "train.jsonl")[0].text == "zero"
    marker = json.loads((out / "stages" / "shard.done").read_text())
    assert marker["outputs"]["utterances"] == 2

    # Nothing left to do: a third run only prints the table.
    run_recipe(options)
    assert markers(out) == after


def test_recipe_with_an_lm_config_trains_one_and_scores_with_fusion(stub, tmp_path, one_thread, monkeypatch):
    import yaml

    recipes_dir, corpus = stub
    lm_cfg = {"model": {"embed_dim": 8, "hidden": 16, "layers": 1}, "epochs": 2, "batch_size": 2}
    (recipes_dir / "stub" / "conf" / "lm.yaml").write_text(yaml.safe_dump(lm_cfg))
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # a relative --out, then the lm stage resumed from another directory
    options = RecipeOptions("stub", Path(corpus.name), Path("out"), recipes_dir=recipes_dir, progress=False,
                            overrides=("train.max_steps=2",))
    run_recipe(replace(options, stage=None))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    results = run_recipe(replace(options, data=Path("..") / corpus.name, out=Path("../out"), stage="lm"))
    marker = json.loads((out / "stages" / "lm.done").read_text())["outputs"]
    assert marker["lm"] == str(out / "lm.pt") and marker["epochs"] == 2 and marker["train_lines"] >= 1
    from asr.models.lm import load_lm
    from asr.text import CharTokenizer
    assert list(load_lm(out / "lm.pt").vocab) == CharTokenizer.load(out / "vocab.txt").symbols
    assert set(results["tests"]["test"]) == {"greedy", "beam10", "beam10+ctc0.3", "beam10+lm0.3",
                                             "beam10+ctc0.3+lm0.3"}
    fused = json.loads((out / "eval" / "test" / "beam10+ctc0.3+lm0.3" / "summary.json").read_text())
    assert fused["decode_options"]["lm_weight"] == 0.3 and fused["decode_options"]["ctc_weight"] == 0.3
    assert "| test | beam10+lm0.3 | 2 |" in (out / "results.md").read_text()


def test_cli_stage_forces_a_restart(stub, tmp_path, capsys, one_thread):
    recipes_dir, corpus = stub
    out = tmp_path / "out"
    args = ["recipe", "stub", "--data", str(corpus), "--out", str(out), "--recipes-dir", str(recipes_dir),
            "--no-progress", "--set", "train.max_steps=2", "--set", "model.ctc_weight=0"]
    assert main(args) == 0
    first = markers(out)
    table = capsys.readouterr().out
    assert table.startswith("Recipe `stub`") and "| test | beam10 | 2 |" in table
    assert "ctc" not in table  # no CTC head: no CTC-fused search
    assert main([*args, "--stage", "average"]) == 0
    again = markers(out)
    assert all(again[s] == first[s] for s in STAGES[:STAGES.index("average")])
    assert all(again[s] > first[s] for s in STAGES[STAGES.index("average"):])
    assert (out / "data" / "calls.txt").read_text() == "prepare\n"
    assert main([*args, "--stage", "nonsense"]) == 1
    assert "unknown stage" in capsys.readouterr().err


def test_add_train_joins_extra_manifests_to_the_training_split_only(stub, tmp_path, monkeypatch):
    import asr.recipe as recipe
    from asr.recipe import RecipeError

    recipes_dir, corpus = stub
    write_jsonl_corpus(tmp_path / "extra", ("more",))
    stop = RuntimeError("stop after validate")
    monkeypatch.setitem(recipe.STAGE_FUNCTIONS, "vocab", lambda run: (_ for _ in ()).throw(stop))
    options = RecipeOptions("stub", corpus, tmp_path / "out", recipes_dir=recipes_dir, progress=False,
                            add_train=(tmp_path / "extra" / "more.jsonl",))
    with pytest.raises(RuntimeError, match="stop after validate"):
        run_recipe(options)
    train = read_manifest(tmp_path / "out" / "data" / "train.jsonl")
    assert [u.id for u in train] == ["train_0", "train_1", "more_0", "more_1"]
    assert train[2].audio == str((tmp_path / "extra" / "audio" / "spk0" / "more_0.flac").resolve())
    assert [u.id for u in read_manifest(tmp_path / "out" / "data" / "dev.jsonl")] == ["dev_0", "dev_1"]

    clash = RecipeOptions("stub", corpus, tmp_path / "out2", recipes_dir=recipes_dir, progress=False,
                          add_train=(corpus / "train.jsonl",))
    with pytest.raises(RecipeError, match=r"train\.jsonl: 2 ids already in the training split, e.g. train_0"):
        run_recipe(clash)


def test_validate_stage_stops_on_faults(stub, tmp_path):
    recipes_dir, corpus = stub
    (corpus / "audio" / "spk1" / "dev_1.flac").unlink()
    options = RecipeOptions("stub", corpus, tmp_path / "out", recipes_dir=recipes_dir, progress=False)
    from asr.recipe import RecipeError
    with pytest.raises(RecipeError, match="missing_file"):
        run_recipe(options)
    assert set(markers(tmp_path / "out")) == {"prepare"}


def test_unknown_recipe_names_the_known_ones(tmp_path):
    from asr.recipe import RecipeError
    with pytest.raises(RecipeError, match="fsdd"):
        load_recipe("nope")
    assert (default_recipes_dir() / "fsdd" / "prepare.py").is_file()
