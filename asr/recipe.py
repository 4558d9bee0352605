"""Recipes: one corpus from its own on-disk layout to a scored model, stage by stage.

A recipe is a folder `recipes/NAME/` holding `prepare.py` (a module defining
`prepare(data_dir, out_dir) -> {split: manifest}` and the split names `TRAIN`,
`DEV`, `TESTS`), `conf/las.yaml` (an ExperimentConfig, values only), optionally
`conf/lm.yaml` (an LMConfig: a character LM is then trained on the training
transcripts and the test sets are also scored with shallow fusion) and a README.

    prepare -> validate -> vocab -> shard -> train -> average -> lm -> evaluate -> results

Every finished stage writes `OUT/stages/<stage>.done` (JSON: what it produced and
the settings it used); a rerun starts at the first stage without a marker, so an
interrupted recipe goes on where it stopped (training itself resumes from its
last.pt). Starting at a given stage clears the markers of that stage and of every
later one. A rerun whose settings (`--set`, `--data`, ...) differ from those a
finished stage used is refused, naming the keys and the stage to restart from,
rather than keeping that stage's old outputs and printing old results.

The helpers at the end (`utterances_from_files`, `copy_manifests`, ...) are the
parts the prepare modules share.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import asr
from asr.errors import AsrError
from asr.files import output_folder

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("prepare", "validate", "vocab", "shard", "train", "average", "lm", "evaluate",
                            "results")
CONFIG_NAME = "conf/las.yaml"  # the recipe's experiment config, relative to its folder
LM_CONFIG_NAME = "conf/lm.yaml"  # the recipe's language model config (optional), relative to its folder
SEARCHES: dict[str, dict[str, Any]] = {  # name -> DecodeOptions fields of each evaluation
    "greedy": {"beam_size": 1},
    "beam10": {"beam_size": 10},
    "beam10+ctc0.3": {"beam_size": 10, "ctc_weight": 0.3},  # only for models with a CTC head
    "beam10+lm0.3": {"beam_size": 10, "lm_weight": 0.3},  # only for recipes with a language model
    "beam10+ctc0.3+lm0.3": {"beam_size": 10, "ctc_weight": 0.3, "lm_weight": 0.3},  # both
}


class RecipeError(AsrError):
    """A recipe cannot be found or loaded, a stage's input is missing, or its data has faults."""


@dataclass(frozen=True)
class RecipeOptions:
    """What `run_recipe` runs and where."""

    name: str  # recipe name: a folder under recipes_dir
    data: Path  # the corpus as the user has it on disk
    out: Path  # everything the recipe writes goes under this folder
    overrides: tuple[str, ...] = ()  # `key.sub=value` overrides of the recipe's config
    stage: str | None = None  # restart from this stage (None = continue after the last finished one)
    recipes_dir: Path | None = None  # folder of recipes (None = `recipes/` beside the package)
    config: Path | None = None  # experiment config (None = the recipe's conf/las.yaml)
    shard_size: int = 1000  # utterances per training shard
    average_best: int = 3  # best checkpoints averaged into model.pt
    progress: bool = True  # progress bars on stderr
    add_train: tuple[Path, ...] = ()  # JSON Lines manifests whose utterances join the training split
    extra: dict[str, Any] = field(default_factory=dict)  # keyword arguments passed on to prepare()


@dataclass
class RecipeRun:
    """One run of a recipe: its options, its prepare module and the markers written so far."""

    options: RecipeOptions
    module: ModuleType  # the recipe's prepare.py
    folder: Path  # the recipe's folder

    @property
    def out(self) -> Path:
        return self.options.out

    def marker(self, stage: str) -> Path:
        """The file that says `stage` is done."""
        return self.out / "stages" / f"{stage}.done"

    def done(self, stage: str) -> dict[str, Any] | None:
        """What a finished stage recorded, or None when it has not finished."""
        path = self.marker(stage)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("%s: unreadable stage marker, the stage runs again", path)
            return None

    def changes(self, stage: str, inputs: dict[str, Any]) -> list[str]:
        """How `inputs` differ from the settings a finished stage recorded ("key: old -> new")."""
        from asr.checkpoint import config_changes

        record = self.done(stage)
        if record is None:
            return []
        recorded = record.get("inputs")
        if recorded is None and stage == "train":  # a marker from before inputs were recorded
            recorded = self.portable(_read_yaml(self.out / "config.yaml"))
        return [] if recorded is None else config_changes(recorded, inputs)

    def portable(self, config: Any) -> Any:
        """An experiment config with the paths under OUT written as "OUT/...", so that a moved
        output folder compares equal (the data and run paths follow from --out, they are not settings)."""
        if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
            return config
        def short(value: Any) -> Any:
            text = str(value)
            return "OUT" + text[len(str(self.out)):] if text.startswith(str(self.out)) else value
        data = {k: short(v) if k in ("train", "dev", "vocab") else v for k, v in config["data"].items()}
        return {**config, "data": data, "out_dir": short(config.get("out_dir"))}

    def outputs(self, stage: str) -> dict[str, Any]:
        """The outputs of an earlier stage; RecipeError when it has not finished."""
        record = self.done(stage)
        if record is None:
            raise RecipeError(f"{self.out}: stage {stage!r} has not finished (rerun with --stage {stage})")
        return record["outputs"]

    def manifests(self) -> dict[str, Path]:
        """Split name -> manifest, as written by the prepare stage."""
        return {split: Path(path) for split, path in self.outputs("prepare")["manifests"].items()}


# --- finding and loading recipes ---------------------------------------------------------------

def default_recipes_dir() -> Path:
    """The `recipes/` folder beside the installed package."""
    return Path(asr.__file__).resolve().parents[1] / "recipes"


def available_recipes(recipes_dir: Path | None = None) -> list[str]:
    """Names of the folders of `recipes_dir` that hold a prepare.py."""
    root = Path(recipes_dir or default_recipes_dir())
    return sorted(p.parent.name for p in root.glob("*/prepare.py")) if root.is_dir() else []


def load_recipe(name: str, recipes_dir: Path | None = None) -> tuple[Path, ModuleType]:
    """The folder and the imported prepare.py of recipe `name`; checks the module's contract."""
    root = Path(recipes_dir or default_recipes_dir())
    folder = root / name
    source = folder / "prepare.py"
    if not source.is_file():
        known = ", ".join(available_recipes(root)) or "none"
        raise RecipeError(f"no recipe {name!r} in {root} (no {source.name}); recipes there: {known}")
    spec = importlib.util.spec_from_file_location(f"asr_recipe_{name.replace('-', '_')}", source)
    if spec is None or spec.loader is None:
        raise RecipeError(f"{source}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [attr for attr in ("prepare", "TRAIN", "DEV", "TESTS") if not hasattr(module, attr)]
    if missing:
        raise RecipeError(f"{source}: a recipe module must define {', '.join(missing)}")
    return folder, module


# --- running ----------------------------------------------------------------------------------

def run_recipe(options: RecipeOptions) -> dict[str, Any]:
    """Run the stages of a recipe from the first unfinished one (or `options.stage`); returns the results."""
    if options.stage is not None and options.stage not in STAGES:
        raise RecipeError(f"unknown stage {options.stage!r}; stages: {', '.join(STAGES)}")
    folder, module = load_recipe(options.name, options.recipes_dir)
    # Absolute paths, so what the stage markers record still holds when a run is resumed from
    # another working directory.
    options = replace(options, out=Path(options.out).resolve(), data=Path(options.data).resolve())
    output_folder(options.out, "--out")
    run = RecipeRun(options, module, folder)
    inputs = stage_inputs(run)  # a bad config or override fails now, not after hours of preparation
    first = STAGES.index(options.stage) if options.stage else next(
        (i for i, s in enumerate(STAGES) if run.done(s) is None), len(STAGES))
    for stage in STAGES[:first]:  # kept stages must have been made with today's settings
        changes = run.changes(stage, inputs.get(stage, {}))
        if changes:
            shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
            raise RecipeError(f"{options.out}: the settings differ from those stage {stage} ran with ({shown}); "
                              f"its outputs and those after it are stale: rerun with --stage {stage} to redo them "
                              "with these settings, or choose another --out")
    for stage in STAGES[first:]:
        run.marker(stage).unlink(missing_ok=True)
    for stage in STAGES[:first]:
        log.info("stage %s: done before (%s)", stage, run.marker(stage))
    for stage in STAGES[first:]:
        log.info("stage %s: starting", stage)
        start = time.perf_counter()
        outputs = STAGE_FUNCTIONS[stage](run)
        _write_json(run.marker(stage), {"stage": stage, "seconds": round(time.perf_counter() - start, 3),
                                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                        "inputs": inputs.get(stage, {}), "outputs": outputs})
        log.info("stage %s: done in %.1f s", stage, time.perf_counter() - start)
    return json.loads((options.out / "results.json").read_text(encoding="utf-8"))


def stage_inputs(run: RecipeRun) -> dict[str, dict[str, Any]]:
    """The settings each stage's outputs depend on, beyond the stages before it, as plain values:
    the options of prepare, shard and average, the normaliser of vocab, the whole experiment
    config of train, the LM config of lm."""
    from asr.config import to_dict

    options = run.options
    config = to_dict(experiment_config(run))
    lm_path = run.folder / LM_CONFIG_NAME
    return {
        "prepare": {"--data": str(options.data), "--add-train": [str(Path(p).resolve()) for p in options.add_train],
                    "prepare options": json.loads(json.dumps(options.extra, default=str))},
        "vocab": {"text": config["text"]},
        "shard": {"--shard-size": options.shard_size},
        "train": run.portable(config),
        "average": {"--average": options.average_best},
        "lm": {"lm": _read_yaml(lm_path) if lm_path.exists() else None},
    }


def _read_yaml(path: Path) -> Any:
    """A YAML file's values; None when it cannot be read."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None


def experiment_config(run: RecipeRun) -> Any:
    """The recipe's ExperimentConfig with the run's data paths and then the user's overrides applied."""
    import yaml

    from asr.config import ConfigError, apply_overrides, from_dict
    from asr.train import ExperimentConfig

    path = run.options.config or run.folder / CONFIG_NAME
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise RecipeError(f"{path}: cannot read the recipe's config: {err}") from None
    data = apply_overrides(data, [
        f"data.train={run.out / 'shards' / 'train'}",
        f"data.dev={run.out / 'data' / f'{run.module.DEV}.jsonl'}",
        f"data.vocab={run.out / 'vocab.txt'}",
        f"out_dir={run.out / 'exp'}",
    ])
    data = apply_overrides(data, list(run.options.overrides))
    try:
        return from_dict(ExperimentConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def stage_prepare(run: RecipeRun) -> dict[str, Any]:
    """The recipe's prepare(): the corpus layout -> OUT/data/<split>.jsonl."""
    data = Path(run.options.data)
    if not data.exists():
        raise RecipeError(f"{data}: no such corpus folder")
    written = run.module.prepare(data, run.out / "data", **run.options.extra)
    need = [run.module.TRAIN, run.module.DEV]
    missing = [s for s in need if s not in written]
    if missing:
        raise RecipeError(f"recipe {run.options.name}: prepare() wrote no {', '.join(missing)} split")
    if run.options.add_train:
        from asr.data.manifest import read_manifest

        train = join_training(read_manifest(written[run.module.TRAIN]), run.options.add_train)
        written.update(write_splits({run.module.TRAIN: train}, run.out / "data"))
        log.info("training split: %d utterances after adding %s", len(train),
                 ", ".join(str(p) for p in run.options.add_train))
    tests = [s for s in run.module.TESTS if s in written]
    if not tests:
        raise RecipeError(f"recipe {run.options.name}: prepare() wrote none of the test splits "
                          f"{', '.join(run.module.TESTS)}")
    for split, path in written.items():
        log.info("prepared %s: %s", split, path)
    return {"recipe": run.options.name, "data": str(data),
            "manifests": {split: str(Path(p).resolve()) for split, p in written.items()},
            "train": run.module.TRAIN, "dev": run.module.DEV, "tests": tests}


def stage_validate(run: RecipeRun) -> dict[str, Any]:
    """validate_manifest of every split; any fault stops the run with the reports."""
    from asr.data.validate import validate_manifest

    reports = {split: validate_manifest(path, progress=run.options.progress) for split, path in run.manifests().items()}
    bad = [r for r in reports.values() if not r.ok]
    if bad:
        raise RecipeError("the prepared manifests have faults; fix the corpus or the recipe, then rerun:\n"
                          + "\n".join(r.format_text() for r in bad))
    return {split: {"utterances": r.utterances} for split, r in reports.items()}


def stage_vocab(run: RecipeRun) -> dict[str, Any]:
    """The character vocabulary of the training texts, normalised as the config says."""
    from asr.recognizer import load_tokenizer

    cfg = experiment_config(run)
    tokenizer = load_tokenizer(None, str(run.manifests()[run.module.TRAIN]), cfg.text)
    path = run.out / "vocab.txt"
    tokenizer.save(path)
    return {"vocab": str(path), "symbols": len(tokenizer)}


def stage_shard(run: RecipeRun) -> dict[str, Any]:
    """The training split as WebDataset shards in OUT/shards/train."""
    from asr.data.manifest import read_manifest
    from asr.data.shards import write_shards

    folder = run.out / "shards" / "train"
    index = write_shards(read_manifest(run.manifests()[run.module.TRAIN]), folder,
                         shard_size=run.options.shard_size, progress=run.options.progress)
    return {"shards": str(folder), "count": len(index.shards), "utterances": index.utterances,
            "hours": round(index.seconds / 3600, 4)}


def stage_train(run: RecipeRun) -> dict[str, Any]:
    """Train on the shards (global CMVN is computed by the trainer); resumes from last.pt if present."""
    from asr.config import save_config
    from asr.train import fit

    cfg = experiment_config(run)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.out / "config.yaml")
    run_dir = fit(cfg, progress=run.options.progress)
    return {"run_dir": str(run_dir), "config": str(run.out / "config.yaml")}


def stage_average(run: RecipeRun) -> dict[str, Any]:
    """The best checkpoints' mean -> OUT/model.pt (the last checkpoint when none was ranked)."""
    from asr.checkpoint import average_checkpoints, best_checkpoints

    run_dir = Path(run.outputs("train")["run_dir"])
    paths = best_checkpoints(run_dir, run.options.average_best)
    if not paths:
        paths = [p for p in (run_dir / "last.pt",) if p.exists()]
    if not paths:
        raise RecipeError(f"{run_dir}: no checkpoints to average (rerun with --stage train)")
    model = run.out / "model.pt"
    average_checkpoints(paths, model)
    return {"model": str(model), "averaged": [str(p) for p in paths]}


def stage_lm(run: RecipeRun) -> dict[str, Any]:
    """With conf/lm.yaml: a character LM on the training transcripts -> OUT/lm.pt (else nothing)."""
    from asr.config import load_config
    from asr.lm_train import LMConfig, train_lm

    path = run.folder / LM_CONFIG_NAME
    if not path.exists():
        log.info("recipe %s has no %s: no language model", run.options.name, LM_CONFIG_NAME)
        return {"lm": None}
    cfg = replace(load_config(LMConfig, path), text=experiment_config(run).text)  # the recognizer's normaliser
    lm = run.out / "lm.pt"
    summary = train_lm(cfg, [run.manifests()[run.module.TRAIN]], run.out / "vocab.txt", lm)
    log.info("language model: held-out perplexity %.3f per character (uniform %d)", summary["dev_perplexity"],
             summary["uniform_perplexity"])
    return {"lm": str(lm), **summary}


def stage_evaluate(run: RecipeRun) -> dict[str, Any]:
    """Every test split with each search of SEARCHES that fits the model (CTC head) and the run (LM)
    -> OUT/eval/<split>/<search>/ reports."""
    from asr.evaluate import evaluate
    from asr.recognizer import load_model
    from asr.search import DecodeOptions

    manifests = run.manifests()
    recognizer = load_model(run.out / "model.pt", device="auto")
    lm_path = run.outputs("lm")["lm"]
    lm = recognizer.load_lm(lm_path) if lm_path else None
    summaries: dict[str, dict[str, Any]] = {}
    for split in run.outputs("prepare")["tests"]:
        for search, fields in SEARCHES.items():
            if fields.get("ctc_weight") and recognizer.model.ctc is None or fields.get("lm_weight") and lm is None:
                continue
            report = run.out / "eval" / split / search
            summary = evaluate(recognizer, str(manifests[split]), DecodeOptions(**fields), lm=lm,
                               report_dir=report, progress=run.options.progress)
            log.info("%s %s: WER %.2f%% CER %.2f%%", split, search, summary["wer"], summary["cer"])
            summaries.setdefault(split, {})[search] = {**summary, "report": str(report)}
    return {"summaries": summaries}


def stage_results(run: RecipeRun) -> dict[str, Any]:
    """OUT/results.json and the markdown table OUT/results.md."""
    summaries = run.outputs("evaluate")["summaries"]
    results = {"recipe": run.options.name, "model": str(run.out / "model.pt"),
               "overrides": list(run.options.overrides), "tests": summaries}
    _write_json(run.out / "results.json", results)
    (run.out / "results.md").write_text(results_table(results), encoding="utf-8")
    return {"results": str(run.out / "results.json"), "table": str(run.out / "results.md")}


STAGE_FUNCTIONS: dict[str, Callable[[RecipeRun], dict[str, Any]]] = {
    "prepare": stage_prepare, "validate": stage_validate, "vocab": stage_vocab, "shard": stage_shard,
    "train": stage_train, "average": stage_average, "lm": stage_lm, "evaluate": stage_evaluate,
    "results": stage_results,
}


def results_table(results: dict[str, Any]) -> str:
    """A markdown table: one row per test split and search, WER and CER in percent."""
    lines = [f"Recipe `{results['recipe']}`, model `{results['model']}`", "",
             "| test set | search | utterances | WER % | CER % |", "| --- | --- | ---: | ---: | ---: |"]
    for split, searches in results["tests"].items():
        for search, s in searches.items():
            lines.append(f"| {split} | {search} | {s['utterances']} | {s['wer']:.2f} | {s['cer']:.2f} |")
    return "\n".join(lines) + "\n"


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, so a marker is either whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- helpers for prepare modules ----------------------------------------------------------------

def durations(paths: Sequence[str | os.PathLike], jobs: int = 8) -> list[float]:
    """Seconds of each audio file, from its header (read in threads: the work is file I/O)."""
    from asr.audio import audio_info

    if len(paths) < 2:
        return [audio_info(p).duration for p in paths]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [info.duration for info in pool.map(audio_info, paths)]


def utterances_from_files(rows: Iterable[tuple[str, str | os.PathLike, str, str | None]]) -> list:
    """Utterances from (id, audio path, text, speaker) rows; durations come from the audio headers."""
    from asr.data.manifest import Utterance

    rows = list(rows)
    seconds = durations([r[1] for r in rows])
    return [Utterance(uid, str(Path(audio).resolve()), dur, text, speaker)
            for (uid, audio, text, speaker), dur in zip(rows, seconds)]


def write_splits(splits: dict[str, Sequence], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write each split's utterances to OUT_DIR/<split>.jsonl; RecipeError for an empty split."""
    from asr.data.manifest import write_manifest

    out = Path(out_dir)
    written: dict[str, Path] = {}
    for split, utterances in splits.items():
        if not utterances:
            raise RecipeError(f"split {split!r} has no utterances")
        path = out / f"{split}.jsonl"
        write_manifest(utterances, path)
        written[split] = path
    return written


def join_training(utterances: Sequence, manifests: Sequence[str | os.PathLike]) -> list:
    """`utterances` followed by those of each manifest (absolute audio paths); RecipeError when an id repeats."""
    from asr.data.manifest import read_manifest

    joined = list(utterances)
    seen = {u.id for u in joined}
    for manifest in manifests:
        extra = read_manifest(manifest)
        clashes = sorted(seen & {u.id for u in extra})
        if clashes:
            raise RecipeError(f"{manifest}: {len(clashes)} ids already in the training split, e.g. {clashes[0]}")
        seen.update(u.id for u in extra)
        joined.extend(extra)
    return joined


def copy_manifests(data_dir: str | os.PathLike, out_dir: str | os.PathLike, splits: Sequence[str],
                   required: Sequence[str] = ()) -> dict[str, Path]:
    """Copy DATA_DIR/<split>.jsonl manifests to OUT_DIR with absolute audio paths (missing optional splits skipped)."""
    from asr.data.manifest import read_manifest

    data = Path(data_dir)
    present = {s: data / f"{s}.jsonl" for s in splits if (data / f"{s}.jsonl").is_file()}
    missing = [s for s in required if s not in present]
    if missing:
        raise RecipeError(f"{data}: no {', '.join(f'{s}.jsonl' for s in missing)}")
    return write_splits({s: read_manifest(p) for s, p in present.items()}, out_dir)
