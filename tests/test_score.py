"""`asr score` and the scorer: NIST sclite's counts exactly, transcript parsing, edge cases by brute force."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import jiwer
import pytest

from asr.cli import main
from asr.reports import (
    TranscriptError,
    detect_format,
    pair_transcripts,
    read_transcripts,
    split_trn,
    write_kaldi,
    write_trn,
)
from asr.scoring import DELETION_COST, INSERTION_COST, SUBSTITUTION_COST, align, count, score_texts, score_utterance

SCLITE = shutil.which("sctk")
needs_sclite = pytest.mark.skipif(SCLITE is None, reason="NIST sclite not installed (Debian package sctk)")

UNICODE_WORDS = ["ça", "été", "naïve", "日本", "日", "本", "straße", "ß", "ñ", "ok", "привет", "😀"]


# ---------------------------------------------------------------- corpora

def _edited(rng: random.Random, ref: list[str], words: list[str], rate: float) -> list[str]:
    """ref with random substitutions, deletions and insertions (what a recognizer does)."""
    hyp = []
    for word in ref:
        x = rng.random()
        if x < rate / 3:
            continue
        hyp.append(rng.choice(words) if x < 2 * rate / 3 else word)
        if rng.random() < rate / 3:
            hyp.append(rng.choice(words))
    return hyp


def random_corpus(seed: int, utterances: int = 120) -> list[tuple[str, str]]:
    """(ref, hyp) pairs: edited and unrelated hypotheses over small and large vocabularies, plus edge cases."""
    rng = random.Random(seed)
    vocab = [[f"w{i}" for i in range(v)] for v in (2, 3, 5, 12, 60)] + [UNICODE_WORDS]
    pairs = []
    for _ in range(utterances):
        words = rng.choice(vocab)
        ref = [rng.choice(words) for _ in range(rng.randint(0, 14))]
        kind = rng.random()
        if kind < 0.45:
            hyp = _edited(rng, ref, words, rng.choice([0.1, 0.3, 0.6]))
        elif kind < 0.9:
            hyp = [rng.choice(words) for _ in range(rng.randint(0, 14))]
        elif kind < 0.95:
            hyp = []
        else:
            hyp = ref * 2  # repeated words
        pairs.append((" ".join(ref), " ".join(hyp)))
    pairs += [("", ""), ("", "x"), ("", "x y z"), ("a", ""), ("the the the", "the"), ("the", "the the the"),
              ("a b c d e", "d e x y z"), ("a b c", "c x y"), ("a b c", "y x a"), ("日本 語", "日 本 語"),
              ("a a a a a a", "a a b a a a a"), ("x" * 40, "x" * 39)]
    return pairs


def _write_pair(tmp: Path, pairs: list[tuple[str, str]], name: str) -> tuple[Path, Path]:
    ids = [f"spk{i % 7}-utt{i:05d}" for i in range(len(pairs))]
    ref, hyp = tmp / f"{name}.ref.trn", tmp / f"{name}.hyp.trn"
    write_trn(ref, zip(ids, (r for r, _ in pairs)))
    write_trn(hyp, zip(ids, (h for _, h in pairs)))
    return ref, hyp


def run_sclite(ref: Path, hyp: Path) -> tuple[dict[str, int], dict[str, tuple[int, int, int, int]]]:
    """sclite's corpus totals (rsum report) and per-utterance (C, S, D, I) (pra report), case-sensitive."""
    base = [SCLITE, "sclite", "-r", str(ref), "trn", "-h", str(hyp), "trn", "-i", "rm", "-s", "-e", "utf-8"]
    rsum = subprocess.run(base + ["-o", "rsum", "stdout"], capture_output=True, text=True, check=True).stdout
    line = next(line for line in rsum.splitlines() if re.match(r"\s*\|\s*Sum\s*\|", line))
    snt, wrd, corr, sub, dele, ins, err, serr = (int(v) for v in re.findall(r"\d+", line))
    totals = {"utterances": snt, "words": wrd, "hits": corr, "substitutions": sub, "deletions": dele,
              "insertions": ins, "errors": err, "sentence_errors": serr}
    pra = subprocess.run(base + ["-o", "pra", "stdout"], capture_output=True, text=True, check=True).stdout
    per_utt = {m[1]: tuple(int(v) for v in m.groups()[1:])
               for m in re.finditer(r"id: \((\S+)\)\nScores: \(#C #S #D #I\) (\d+) (\d+) (\d+) (\d+)", pra)}
    return totals, per_utt


# ---------------------------------------------------------------- against sclite

@needs_sclite
@pytest.mark.parametrize("seed", range(6))
def test_counts_equal_sclite_on_random_and_edge_case_corpora(tmp_path, seed):
    pairs = random_corpus(seed)
    ref, hyp = _write_pair(tmp_path, pairs, f"c{seed}")
    totals, per_utt = run_sclite(ref, hyp)
    ours = score_texts([r for r, _ in pairs], [h for _, h in pairs])
    for key in ("utterances", "words", "hits", "substitutions", "deletions", "insertions", "sentence_errors"):
        assert ours[key] == totals[key], key
    assert abs(ours["wer"] - 100.0 * totals["errors"] / totals["words"]) < 0.01
    ids = [line.rsplit("(", 1)[1].rstrip(")\n") for line in ref.read_text(encoding="utf-8").splitlines()]
    for uid, (r, h) in zip(ids, pairs):
        w = score_utterance(r, h).words
        assert (w.hits, w.substitutions, w.deletions, w.insertions) == per_utt[uid], (uid, r, h)


@needs_sclite
def test_asr_score_json_equals_sclite_through_the_cli(tmp_path, capsys):
    pairs = random_corpus(100, utterances=300)
    ref, hyp = _write_pair(tmp_path, pairs, "cli")
    totals, _ = run_sclite(ref, hyp)
    assert main(["score", str(ref), str(hyp), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["wer"] - 100.0 * totals["errors"] / totals["words"]) < 0.01
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (
        totals["substitutions"], totals["deletions"], totals["insertions"])


@needs_sclite
def test_empty_references_sclite_counts_insertions_and_reports_zero_rate(tmp_path):
    """The one documented difference: no reference words at all -> sclite prints 0.0%, we 100% per insertion."""
    pairs = [("", "x y"), ("", "")]
    ref, hyp = _write_pair(tmp_path, pairs, "empty")
    totals, _ = run_sclite(ref, hyp)
    ours = score_texts([r for r, _ in pairs], [h for _, h in pairs])
    assert totals["insertions"] == ours["insertions"] == 2 and totals["words"] == ours["words"] == 0
    assert ours["wer"] == 200.0


# ---------------------------------------------------------------- against brute force

def _all_alignments(ref: tuple, hyp: tuple):
    """Every alignment of two short sequences, as lists of (ref token | None, hyp token | None)."""
    if not ref and not hyp:
        yield []
        return
    if ref and hyp:
        for rest in _all_alignments(ref[1:], hyp[1:]):
            yield [(ref[0], hyp[0])] + rest
    if ref:
        for rest in _all_alignments(ref[1:], hyp):
            yield [(ref[0], None)] + rest
    if hyp:
        for rest in _all_alignments(ref, hyp[1:]):
            yield [(None, hyp[0])] + rest


def _cost(steps, sub=SUBSTITUTION_COST, ins=INSERTION_COST, dele=DELETION_COST) -> int:
    return sum(ins if r is None else dele if h is None else (0 if r == h else sub) for r, h in steps)


def test_alignment_is_optimal_and_valid_against_enumeration():
    rng = random.Random(7)
    cases = [((), ()), ((), ("a",)), (("a",), ()), (("a", "a", "a"), ("a",)), (("a", "b", "c"), ("c", "x", "y"))]
    cases += [(tuple(rng.choice("abc") for _ in range(rng.randint(0, 5))),
               tuple(rng.choice("abcd") for _ in range(rng.randint(0, 5)))) for _ in range(150)]
    for ref, hyp in cases:
        edits = align(list(ref), list(hyp))
        assert tuple(e.ref for e in edits if e.ref is not None) == ref
        assert tuple(e.hyp for e in edits if e.hyp is not None) == hyp
        assert all((e.op == "C") == (e.ref == e.hyp) for e in edits)
        steps = [(e.ref, e.hyp) for e in edits]
        alignments = list(_all_alignments(ref, hyp))
        assert _cost(steps) == min(_cost(a) for a in alignments)
        # the minimum edit count (what jiwer reports) never exceeds sclite's
        fewest = min(_cost(a, 1, 1, 1) for a in alignments)
        c = count(edits)
        assert c.substitutions + c.deletions + c.insertions >= fewest
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        assert out.substitutions + out.deletions + out.insertions == fewest


def test_known_sclite_choices():
    # 3 deletions + 3 insertions (cost 18) beat 5 substitutions (cost 20), as in sclite
    assert [e.op for e in align("a b c d e".split(), "d e x y z".split())] == list("DDDCCIII")
    # cost ties go to substitutions
    assert [e.op for e in align("a b c".split(), "c x y".split())] == list("SSS")
    s = score_utterance("the cat sat", "the bat sat down")
    assert (s.words.substitutions, s.words.insertions, s.words.hits) == (1, 1, 2)
    assert s.chars.reference_length == len("the cat sat")


def test_corpus_summary_of_edge_cases():
    out = score_texts(["", "a", "", "a b"], ["", "", "x", "a b"])
    assert out == {**out, "words": 3, "deletions": 1, "insertions": 1, "hits": 2, "utterances": 4,
                   "sentence_errors": 2, "wer": pytest.approx(200 / 3, abs=1e-3)}
    assert score_texts([], [])["wer"] == 0.0
    with pytest.raises(ValueError):
        score_texts(["a"], [])


# ---------------------------------------------------------------- transcript files

def test_trn_and_kaldi_round_trip_and_detection(tmp_path):
    items = [("spk1-u1", "the cat sat"), ("u2", ""), ("u3", "日本 語 ok")]
    write_trn(tmp_path / "a.trn", items)
    write_kaldi(tmp_path / "a.txt", items)
    assert read_transcripts(tmp_path / "a.trn") == dict(items)
    assert read_transcripts(tmp_path / "a.txt") == dict(items)
    assert detect_format((tmp_path / "a.trn").read_text().splitlines()) == "trn"
    assert detect_format((tmp_path / "a.txt").read_text().splitlines()) == "kaldi"
    (tmp_path / "b.trn").write_text(";; comment\n\n  spaced   out  text (x-1)\n(x-2)\n", encoding="utf-8")
    assert read_transcripts(tmp_path / "b.trn") == {"x-1": "spaced out text", "x-2": ""}
    # a Kaldi file whose text ends in parentheses only when forced
    (tmp_path / "c.txt").write_text("u1 hello (laughs)\n", encoding="utf-8")
    assert read_transcripts(tmp_path / "c.txt", "kaldi") == {"u1": "hello (laughs)"}


def test_trn_ids_with_parentheses_round_trip(tmp_path):
    """The id is the last parenthesised group of a line, parentheses inside it balanced (evaluate --report)."""
    items = [("spk(1)-u1", "hello (laughs)"), ("u(2)", ""), ("a b", "x ) y")]
    write_trn(tmp_path / "a.trn", items)
    assert read_transcripts(tmp_path / "a.trn") == dict(items)
    assert split_trn("a (b) (spk(1)-u2)") == ("a (b)", "spk(1)-u2") and split_trn("no id") is None
    with pytest.raises(TranscriptError, match=r"id 'u\(' cannot be written as a trn id"):
        write_trn(tmp_path / "b.trn", [("u(", "x")])
    assert not list(tmp_path.glob(".b.trn.tmp*"))  # no temporary file left behind


def test_a_malformed_trn_line_is_named_not_read_as_kaldi(tmp_path):
    (tmp_path / "ref.trn").write_text("a b (u1)\nbroken line\nc d (u3)\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match=r"ref.trn:2: not a trn line 'text \(id\)' \(most lines are"):
        read_transcripts(tmp_path / "ref.trn")


def test_transcript_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "dup.txt").write_text("u1 a\nu1 b\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match=r"dup.txt:2: utterance id 'u1' appears twice"):
        read_transcripts(tmp_path / "dup.txt")
    (tmp_path / "bad.trn").write_text("a (u1)\nno id here\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match=r"bad.trn:2: not a trn line"):
        read_transcripts(tmp_path / "bad.trn", "trn")
    with pytest.raises(TranscriptError, match="no such transcript file"):
        read_transcripts(tmp_path / "missing.trn")


def test_missing_hypotheses_are_empty_and_extra_ones_an_error():
    ids, refs, hyps, missing = pair_transcripts({"a": "x y", "b": "z"}, {"b": "z"})
    assert (ids, refs, hyps, missing) == (["a", "b"], ["x y", "z"], ["", "z"], ["a"])
    with pytest.raises(TranscriptError, match=r"2 utterance id\(s\) not in the references: 'c', 'd'"):
        pair_transcripts({"a": "x"}, {"a": "x", "c": "y", "d": "z"})


def test_score_command_text_json_and_report(tmp_path, capsys):
    write_kaldi(tmp_path / "ref.txt", [("u1", "the cat sat"), ("u2", "hello world"), ("u3", "foo")])
    write_trn(tmp_path / "hyp.trn", [("u1", "the bat sat"), ("u2", "hello world")])
    assert main(["score", str(tmp_path / "ref.txt"), str(tmp_path / "hyp.trn"), "--json",
                 "--report", str(tmp_path / "rep")]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert {"wer", "cer", "substitutions", "deletions", "insertions", "words", "utterances", "rtf"} <= set(out)
    assert (out["wer"], out["substitutions"], out["deletions"], out["missing"], out["rtf"]) == (
        pytest.approx(200 / 6, abs=1e-3), 1, 1, 1, None)
    assert "1 reference utterance(s) without a hypothesis" in captured.err
    assert json.loads((tmp_path / "rep" / "summary.json").read_text()) == out
    lines = [json.loads(line) for line in (tmp_path / "rep" / "results.jsonl").read_text().splitlines()]
    assert lines[0]["alignment"] == [["C", "the", "the"], ["S", "cat", "bat"], ["C", "sat", "sat"]]
    assert main(["score", str(tmp_path / "ref.txt"), str(tmp_path / "hyp.trn")]) == 0
    assert capsys.readouterr().out.startswith("%WER 33.33 [ 2 / 6, 0 ins, 1 del, 1 sub ]")


def test_score_command_extra_hypothesis_is_a_one_line_error(tmp_path, capsys):
    write_kaldi(tmp_path / "ref.txt", [("u1", "a")])
    write_kaldi(tmp_path / "hyp.txt", [("u1", "a"), ("zz", "b")])
    assert main(["score", str(tmp_path / "ref.txt"), str(tmp_path / "hyp.txt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'zz'" in err[0] and "not in the references" in err[0]
