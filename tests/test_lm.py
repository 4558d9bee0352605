"""Character LM: search interface, learning a tiny corpus, `asr train-lm` and `load_lm`."""

from __future__ import annotations

import doctest
import json
import logging
import math
import random
import re
from pathlib import Path

import pytest
import torch

import asr.lm_train
import asr.models.lm
import asr.text
from asr.checkpoint import save_checkpoint
from asr.cli import main
from asr.lm_train import LMConfig, LMDataError, PackedSentences, perplexity, read_corpus, read_sentences, train_lm
from asr.models.lm import CharLM, CharLMConfig, LMError, load_lm
from asr.text import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = CharLMConfig(embed_dim=16, hidden=48, layers=1, dropout=0.0)


def corpus(n: int, seed: int = 0) -> list[str]:
    """Highly predictable lines: counting words in order from a random start."""
    words = ["one", "two", "three", "four", "five", "six"]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start, length = rng.randrange(len(words)), rng.randint(2, 5)
        out.append(" ".join(words[(start + j) % len(words)] for j in range(length)))
    return out


@pytest.fixture
def text_files(tmp_path):
    lines = corpus(300)
    text = tmp_path / "text.txt"
    text.write_text("\n".join(lines) + "\nTHREE, four!\nfive six \u00e9\n", encoding="utf-8")  # one OOV line
    vocab = tmp_path / "vocab.txt"
    CharTokenizer.from_texts(lines).save(vocab)
    return text, vocab


def test_step_equals_teacher_forcing_and_state_reorders() -> None:
    torch.manual_seed(0)
    lm = CharLM(CharLMConfig(embed_dim=5, hidden=7, layers=2, dropout=0.0), 10).eval()
    tokens = torch.randint(3, 10, (3, 6))
    tokens[:, 0] = lm.go_id
    with torch.no_grad():
        logits = lm(tokens)
        state = lm.init_state(3)
        for i in range(tokens.shape[1]):
            lp, state = lm.step(state, tokens[:, i])
            torch.testing.assert_close(lp, logits[:, i].log_softmax(-1), atol=1e-5, rtol=0)
        idx = torch.tensor([2, 2, 0])
        lp_a, _ = lm.step(state.index_select(idx), tokens[idx, 0])
        lp_b, _ = lm.step(state, tokens[:, 0])
        torch.testing.assert_close(lp_a, lp_b[idx], atol=1e-6, rtol=0)


def test_read_sentences_skips_oov_lines_and_cuts_long_ones(text_files) -> None:
    text, vocab = text_files
    tok = CharTokenizer.load(vocab)
    sents = read_sentences([text], tok, max_chars=8)
    assert max(len(s) for s in sents) == 8
    assert tok.decode(sents[-2]) + tok.decode(sents[-1]) == "three four"  # normalised and cut in two
    assert "\u00e9" not in "".join(tok.decode(s) for s in sents)
    with pytest.raises(LMDataError, match="no usable line"):
        read_sentences([text], CharTokenizer(["<blank>", "[GO]", "[EOS]", "[UNK]", "x"]), max_chars=8)


def test_lm_learns_a_tiny_corpus(text_files, tmp_path) -> None:
    text, vocab = text_files
    cfg = LMConfig(model=TINY, epochs=6, batch_size=16, lr=1e-2, dev_fraction=0.1, device="cpu")
    summary = train_lm(cfg, [text], vocab, tmp_path / "lm.pt")
    uniform = summary["uniform_perplexity"]
    assert summary["dev_perplexity"] < 0.25 * uniform  # far below the uniform model
    lm = load_lm(tmp_path / "lm.pt")
    tok = CharTokenizer.load(vocab)
    held_out = [tok.encode(t) for t in corpus(40, seed=1)]
    assert perplexity(lm, held_out) < 0.25 * uniform
    assert lm.vocab == tok.symbols and not lm.training
    # Greedy continuation of "two thr" is "ee four ...".
    state, lp = lm.init_state(1), None
    for t in [lm.go_id, *tok.encode("two thr")]:
        lp, state = lm.step(state, torch.tensor([t]))
    assert tok.decode([int(lp.argmax())]) == "e"


def test_train_lm_command(text_files, tmp_path, capsys) -> None:
    text, vocab = text_files
    out = tmp_path / "cli_lm.pt"
    code = main(["train-lm", str(text), "--vocab", str(vocab), "--out", str(out), "--set", "epochs=1",
                 "--set", "model.hidden=16", "--set", "model.layers=1", "--set", "device=cpu"])
    assert code == 0 and "perplexity" in capsys.readouterr().out
    lm = load_lm(out)
    assert lm.cfg.hidden == 16 and lm.vocab_size == len(CharTokenizer.load(vocab))
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["config"]["epochs"] == 1 and math.isfinite(ckpt["train_state"]["dev_perplexity"])
    assert main(["train-lm", str(text), "--vocab", str(vocab), "--out", str(out), "--set", "nope=1"]) == 1
    assert "unknown key" in capsys.readouterr().err


def test_load_lm_rejects_other_files(tmp_path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint({"config": {}, "vocab": [], "model": {}}, path)
    with pytest.raises(LMError, match="not a character LM"):
        load_lm(path)


def test_docstring_example_and_vocabulary_check(tmp_path) -> None:
    assert doctest.testmod(asr.models.lm).failed == 0
    lm = CharLM(TINY, 6)
    lm.check_vocab(["a"] * 6)  # unknown vocabulary (not loaded from a file): only the size is checked
    with pytest.raises(LMError, match="6 symbols"):
        lm.check_vocab(["a"] * 7)
    lm.vocab = ["<blank>", "[GO]", "[EOS]", "[UNK]", "a", "b"]
    with pytest.raises(LMError, match="differs"):
        lm.check_vocab(["<blank>", "[GO]", "[EOS]", "[UNK]", "a", "c"])


def old_read_sentences(paths, tokenizer, max_chars):
    """The reader before PackedSentences: every file read whole, a list of ids per line."""
    sentences = []
    for path in map(Path, paths):
        for line in path.read_text(encoding="utf-8").splitlines():
            if path.suffix == ".jsonl":
                line = json.loads(line)["text"] if line.strip() else ""
            try:
                ids = tokenizer.encode(line)
            except asr.text.OOVError:
                continue
            sentences += [ids[i : i + max_chars] for i in range(0, len(ids), max_chars)]
    return [s for s in sentences if s]


def test_packed_reading_gives_the_ids_of_the_old_reader(text_files, tmp_path) -> None:
    text, vocab = text_files
    tok = CharTokenizer.load(vocab)
    odd = tmp_path / "odd.txt"  # CRLF, a bare CR, U+2028, blank lines, a long line and an OOV one
    odd.write_bytes("one two\r\nthree\rfour\u2028five\n\n\nsix six six six six six\nsix \u00e9\n".encode())
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text(json.dumps({"id": "a", "text": "Two, THREE!"}) + "\n\n" + json.dumps({"text": "six"}) + "\n")
    paths = [text, odd, manifest]
    packed = read_corpus(paths, tok, max_chars=9)
    assert packed.to_lists() == old_read_sentences(paths, tok, 9) == read_sentences(paths, tok, 9)
    assert packed.ids.dtype == torch.uint8 and len(packed) == len(read_sentences(paths, tok, 9))
    # Padding a batch from the flat storage == padding the lists.
    idx = torch.tensor([len(packed) - 1, 0, 5])
    tokens, lengths = packed.pad(idx)
    for row, i in enumerate(idx.tolist()):
        assert tokens[row, : lengths[row]].tolist() == packed[i] and not tokens[row, lengths[row] :].any()


def test_training_stops_within_max_steps_or_max_minutes(text_files, tmp_path) -> None:
    text, vocab = text_files
    cfg = LMConfig(model=TINY, epochs=50, batch_size=16, device="cpu", max_steps=3)
    summary = train_lm(cfg, [text], vocab, tmp_path / "steps.pt")
    assert summary["updates"] == 3 and summary["stopped"] == "max_steps" and summary["epochs"] < 1
    assert load_lm(tmp_path / "steps.pt").vocab == CharTokenizer.load(vocab).symbols
    cfg = LMConfig(model=TINY, epochs=50, batch_size=16, device="cpu", max_minutes=1e-9)
    summary = train_lm(cfg, [text], vocab, tmp_path / "minutes.pt")
    assert summary["updates"] == 1 and summary["stopped"] == "max_minutes"  # stops at the first update boundary
    assert math.isfinite(torch.load(tmp_path / "minutes.pt", weights_only=True)["train_state"]["dev_perplexity"])
    load_lm(tmp_path / "minutes.pt")
    with pytest.raises(ValueError, match="max_steps"):
        LMConfig(max_steps=-1)


def test_periodic_evaluation_keeps_the_best_model(text_files, tmp_path, caplog) -> None:
    text, vocab = text_files
    # No held-out share: perplexity is measured on every line, which the test can recompute. With this
    # large learning rate it falls and rises again (best at update 5 of 8 here), so the best is not the last.
    cfg = LMConfig(model=TINY, epochs=1, batch_size=8, lr=1.0, grad_clip=0.0, dev_fraction=0.0, device="cpu",
                   max_steps=8, eval_every=1)
    with caplog.at_level(logging.DEBUG, logger="asr.lm_train"):
        summary = train_lm(cfg, [text], vocab, tmp_path / "lm.pt")
    measured = {int(m[1]): float(m[2]) for m in (re.match(r"update (\d+): held-out perplexity ([\d.]+)", r.message)
                                                 for r in caplog.records) if m}
    assert sorted(measured) == list(range(1, 9))
    assert summary["best_update"] == min(measured, key=measured.get)
    assert summary["dev_perplexity"] == pytest.approx(min(measured.values()), rel=1e-6)
    lines = read_sentences([text], CharTokenizer.load(vocab), cfg.max_chars)
    assert perplexity(load_lm(tmp_path / "lm.pt"), lines) == pytest.approx(summary["dev_perplexity"], rel=1e-5)


def test_eval_text_perplexity_is_that_of_the_written_model(text_files, tmp_path, capsys) -> None:
    text, vocab = text_files
    eval_lines = [line.title() + "." for line in corpus(30, seed=7)]  # normalised like the training text
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(eval_lines)))
    out = tmp_path / "lm.pt"
    code = main(["train-lm", str(text), "--vocab", str(vocab), "--out", str(out), "--eval-text", str(manifest),
                 "--set", "max_steps=6", "--set", "eval_every=3", "--set", "model.hidden=16",
                 "--set", "model.layers=1", "--set", "device=cpu", "--json", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    tok = CharTokenizer.load(vocab)
    expected = perplexity(load_lm(out), [tok.encode(t) for t in eval_lines])
    assert summary["eval_lines"] == 30 and summary["eval_perplexity"] == pytest.approx(expected, abs=1e-3)
    assert torch.load(out, weights_only=True)["train_state"]["eval_perplexity"] == summary["eval_perplexity"]
    assert main(["train-lm", str(text), "--vocab", str(vocab), "--out", str(out), "--eval-text",
                 str(tmp_path / "missing.txt"), "--no-progress"]) == 1
    assert "missing.txt: cannot read text" in capsys.readouterr().err


def test_packed_sentences_docstring() -> None:
    assert doctest.testmod(asr.lm_train).failed == 0
    assert PackedSentences.from_lists([[5], [6, 7]]).to_lists() == [[5], [6, 7]]
