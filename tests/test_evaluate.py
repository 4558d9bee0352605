"""`asr evaluate` on a tiny randomly initialised model: summary keys, report files, counts, batching, shards."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
import tiny_models

from asr.cli import main
from asr.data.manifest import Utterance, read_manifest, write_manifest
from asr.evaluate import evaluate
from asr.recognizer import load_model
from asr.reports import read_transcripts
from asr.scoring import score_texts
from asr.search import DecodeOptions

REQUIRED = {"wer", "cer", "substitutions", "deletions", "insertions", "words", "utterances", "rtf"}
TEXTS = ["one two", "three", "four five six", "seven", "eight nine", "zero one"]


def tiny_model(path: Path, *, ctc_weight: float = 0.3, seed: int = 0) -> Path:
    """The shared tiny random recognizer over this file's texts."""
    return tiny_models.tiny_model(path, TEXTS, ctc_weight=ctc_weight, seed=seed)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Six noise 'utterances' of 0.3-1.6 s with texts; one at 8 kHz stereo, read through resampling."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    utts = []
    for i, text in enumerate(TEXTS):
        seconds = 0.3 + 0.25 * i
        path = folder / f"u{i}.flac"
        if i == 2:
            sf.write(path, rng.normal(0, 0.1, (int(seconds * 8000), 2)).astype(np.float32), 8000)
        else:
            sf.write(path, rng.normal(0, 0.1, int(seconds * 16000)).astype(np.float32), 16000)
        utts.append(Utterance(f"utt{i}", str(path), seconds, text.upper() + "!", speaker=f"spk{i % 2}"))
    write_manifest(utts, folder / "test.jsonl")
    return folder / "test.jsonl"


def test_summary_report_and_counts(model_file, manifest, tmp_path, one_thread):
    recognizer = load_model(model_file)
    summary = evaluate(recognizer, manifest, report_dir=tmp_path / "report", progress=False)
    assert REQUIRED <= set(summary)
    assert summary["utterances"] == len(TEXTS) and summary["missing"] == 0
    refs = [" ".join(t.split()) for t in TEXTS]  # what the tokenizer's normaliser makes of "ONE TWO!"
    assert summary["words"] == jiwer.process_words(refs, refs).hits
    assert summary["chars"] == jiwer.process_characters(refs, refs).hits
    assert summary["audio_seconds"] == pytest.approx(sum(0.3 + 0.25 * i for i in range(6)), abs=0.01)
    # The summary rounds each figure on its own: allow half a unit of the last place of each.
    rounding = 0.5e-3 / summary["audio_seconds"] + 0.5e-5
    assert summary["rtf"] == pytest.approx(summary["decode_seconds"] / summary["audio_seconds"], abs=rounding)

    report = tmp_path / "report"
    assert sorted(p.name for p in report.iterdir()) == ["hyp.trn", "ref.trn", "results.jsonl", "summary.json"]
    records = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"utt{i}" for i in range(6)]
    assert [r["ref"] for r in records] == refs
    for key in ("substitutions", "deletions", "insertions", "hits"):
        assert sum(r[key] for r in records) == summary[key]
    for r in records:  # the alignment spells out both sides
        assert [a[1] for a in r["alignment"] if a[1] is not None] == r["ref"].split()
        assert [a[2] for a in r["alignment"] if a[2] is not None] == r["hyp"].split()
    # the sclite files score to the same counts, and to no fewer errors than jiwer's minimum
    ref_trn, hyp_trn = read_transcripts(report / "ref.trn"), read_transcripts(report / "hyp.trn")
    assert list(ref_trn) == [f"spk{i % 2}-utt{i}" for i in range(6)]
    rescored = score_texts(list(ref_trn.values()), [hyp_trn[k] for k in ref_trn])
    assert {k: rescored[k] for k in rescored} == {k: summary[k] for k in rescored}
    fewest = jiwer.process_words(refs, [r["hyp"] for r in records])
    assert summary["substitutions"] + summary["deletions"] + summary["insertions"] >= (
        fewest.substitutions + fewest.deletions + fewest.insertions)
    details = json.loads((report / "summary.json").read_text())
    assert details["decode_options"]["beam_size"] == 1 and details["wer"] == summary["wer"]
    # batched decoding in the loader's order == each file alone, whole
    alone = recognizer.transcribe([u.audio for u in read_manifest(manifest)], batch_seconds=0.01)
    assert [r["hyp"] for r in records] == alone


def test_shards_give_the_manifest_result(model_file, manifest, tmp_path, one_thread):
    from asr.data.shards import write_shards

    write_shards(read_manifest(manifest), tmp_path / "shards", shard_size=4, order="sorted", prefix="test",
                 progress=False)
    recognizer = load_model(model_file)
    a = evaluate(recognizer, manifest, report_dir=tmp_path / "a", progress=False)
    b = evaluate(recognizer, tmp_path / "shards", report_dir=tmp_path / "b", progress=False, batch_seconds=2.0)
    drop = {"rtf", "decode_seconds"}
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert (tmp_path / "a" / "hyp.trn").read_text() == (tmp_path / "b" / "hyp.trn").read_text()


def test_cli_json_is_one_object_and_the_progress_goes_to_stderr(model_file, manifest, capfd, one_thread):
    assert main(["evaluate", str(model_file), str(manifest), "--json", "--device", "cpu",
                 "--beam-size", "3", "--ctc-weight", "0.3"]) == 0
    out, err = capfd.readouterr()
    summary = json.loads(out)
    assert REQUIRED <= set(summary) and summary["utterances"] == 6 and summary["rtf"] > 0
    assert "evaluate" in err and "6/6" in err  # tqdm


def test_beam_options_reach_the_search(model_file, manifest, one_thread):
    recognizer = load_model(model_file)
    greedy = evaluate(recognizer, manifest, progress=False)
    beam1 = evaluate(recognizer, manifest, DecodeOptions(beam_size=1), progress=False)
    short = evaluate(recognizer, manifest, DecodeOptions(max_len_ratio=0.05), progress=False)
    assert beam1["wer"] == greedy["wer"] and beam1["cer"] == greedy["cer"]
    assert short["char_errors"] != greedy["char_errors"]  # hypotheses capped at 5% of the encoder frames


def test_ctc_weight_without_a_ctc_head_is_a_one_line_error(tmp_path, manifest, capsys, one_thread):
    model = tiny_model(tmp_path / "noctc.pt", ctc_weight=0.0)
    assert main(["evaluate", str(model), str(manifest), "--ctc-weight", "0.3", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CTC" in err[0]


def test_missing_data_and_model_are_one_line_errors(model_file, tmp_path, capsys):
    assert main(["evaluate", str(model_file), str(tmp_path / "none.jsonl"), "--no-progress"]) == 1
    assert main(["evaluate", str(tmp_path / "none.pt"), str(tmp_path / "none.jsonl")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "none.jsonl" in lines[0] and "none.pt" in lines[1]
