"""Bad inputs on the data side (validate, shard, vocab, score, and train/evaluate/transcribe given bad
manifests, shards, indexes, audio or config values): each gives one `asr <cmd>: error:` line naming
the file and the problem, or a named warning when the command rightly goes on; never a traceback."""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from bad_inputs import Case, run_case
from tiny_models import tiny_model

from asr.reports import write_trn
from asr.text import CharTokenizer

TEXT = "hello world"


def wav(path: Path, seconds: float = 0.5, sr: int = 16000, *, samples: int | None = None) -> Path:
    """A 16-bit noise file of `seconds` (or exactly `samples` frames)."""
    n = int(round(seconds * sr)) if samples is None else samples
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(n)).clip(-1, 1), sr, subtype="PCM_16")
    return path


def lines(path: Path, *rows) -> Path:
    """Write rows: a dict as a JSON line, a str as it is, bytes as raw bytes (each ends with a newline)."""
    data = b"".join((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()) + b"\n"
                    for r in rows)
    path.write_bytes(data)
    return path


def row(f: Path, uid: str = "a", text: str = TEXT, seconds: float = 0.5, **extra) -> dict:
    """A good manifest row whose audio is a fresh file `<uid>.wav` (a safe name even for odd ids)."""
    audio = wav(f / f"{abs(hash(uid)) % 10**8}.wav", seconds)
    return {"id": uid, "audio": audio.name, "duration": seconds, "text": text, **extra}


def manifest(f: Path, *rows, name: str = "m.jsonl") -> Path:
    """A manifest of `rows` (default: one good row)."""
    return lines(f / name, *(rows or (row(f),)))


def audio_row(f: Path, audio: str | Path, seconds: float = 0.5, uid: str = "a") -> Path:
    """A manifest of one row whose audio is `audio`."""
    return manifest(f, {"id": uid, "audio": str(audio), "duration": seconds, "text": TEXT})


def fifo(path: Path) -> Path:
    """A FIFO; a helper thread unblocks a reader that opens it (so the code before the fix read it as
    empty instead of hanging the suite)."""
    os.mkfifo(path)

    def unblock() -> None:
        for _ in range(200):  # about 10 s
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while nobody reads
                return
            except OSError:
                time.sleep(0.05)

    threading.Thread(target=unblock, daemon=True).start()
    return path


def folder(path: Path) -> Path:
    """A new, empty directory."""
    path.mkdir()
    return path


def loop(path: Path) -> Path:
    """A symbolic link pointing at itself."""
    os.symlink(path.name, path)
    return path


def truncated_wav(f: Path) -> Path:
    """A 1 s WAV cut to half its bytes, with a manifest whose duration is what is left."""
    full = wav(f / "full.wav", 1.0).read_bytes()
    (f / "cut.wav").write_bytes(full[: len(full) // 2])
    frames = (len(full) // 2 - 44) // 2
    return audio_row(f, f / "cut.wav", seconds=frames / 16000)


def vocab(f: Path) -> Path:
    """A vocabulary covering TEXT."""
    CharTokenizer.from_texts([TEXT]).save(f / "vocab.txt")
    return f / "vocab.txt"


_MODELS: dict[str, Path] = {}


def model() -> Path:
    """A tiny random recognizer, built once per test session."""
    if "tiny" not in _MODELS:
        folder = Path(tempfile.mkdtemp(prefix="bad-inputs-model-"))
        atexit.register(shutil.rmtree, folder, True)
        _MODELS["tiny"] = tiny_model(folder / "model.pt", [TEXT])
    return _MODELS["tiny"]


def evaluate(data: Path, *more) -> list:
    """`asr evaluate` of `data` with the tiny model."""
    return ["evaluate", model(), data, "--no-progress", *more]


def index(f: Path, *rows, name: str = "x.index.jsonl") -> Path:
    """A shard index of raw rows."""
    return lines(f / name, *rows)


def shard_with_ids(f: Path, uid: str, duration: float = 0.5) -> Path:
    """A one-sample shard whose json holds `uid` and `duration`, and its index."""
    audio = wav(f / "a.wav").read_bytes()
    meta = json.dumps({"id": uid, "text": TEXT, "duration": duration, "speaker": None}).encode()
    with tarfile.open(f / "x-000000.tar", "w") as tar:
        for name, data in (("k.wav", audio), ("k.json", meta)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return index(f, {"shard": "x-000000.tar", "utterances": 1, "seconds": 0.5},
                 {"total": {"shards": 1, "utterances": 1, "seconds": 0.5}})


def index_twice(f: Path) -> Path:
    """An index listing one good shard twice."""
    shard = {"shard": "x-000000.tar", "utterances": 1, "seconds": 0.5}
    shard_with_ids(f, "a")
    return index(f, shard, shard, {"total": {"shards": 2, "utterances": 2, "seconds": 1.0}}, name="y.index.jsonl")


def train(f: Path, data: Path | str, *sets: str, vocab_file: Path | None = None) -> list:
    """`asr train` of a one-step CPU run on `data`, with `--set` overrides."""
    cfg = {"data": {"train": str(data), "vocab": str(vocab_file) if vocab_file else None},
           "out_dir": str(f / "run"), "train": {"device": "cpu", "max_steps": 1}}
    (f / "c.yaml").write_text(json.dumps(cfg), encoding="utf-8")
    return ["train", f / "c.yaml", "--no-progress", *(a for s in sets for a in ("--set", s))]


def kaldi_dir(f: Path, segment: str | None = None, text: str = "a hello\n") -> Path:
    """A Kaldi data directory `k` of one recording (and one segment line when given)."""
    k = folder(f / "k")
    wav(k / "rec.wav", 0.5)
    (k / "wav.scp").write_text(f"rec {k / 'rec.wav'}\n")
    (k / "text").write_text(text if segment else text.replace("a ", "rec ", 1))
    if segment:
        (k / "segments").write_text(segment + "\n")
    return k


def trn_pair(f: Path) -> tuple[Path, Path]:
    """ref.trn and hyp.trn as `asr evaluate --report` writes them, ids holding parentheses; u2 has no hypothesis."""
    write_trn(f / "ref.trn", [("spk(1)-u1", "hello world"), ("spk(1)-u2", "hello (laughs)")])
    write_trn(f / "hyp.trn", [("spk(1)-u1", "hello word")])
    return f / "ref.trn", f / "hyp.trn"


def bad_ref(f: Path) -> tuple[Path, Path]:
    """A ref.trn with one malformed line among good ones, and a good hyp.trn."""
    lines(f / "ref.trn", "hello world (u1)", "no id on this line", "good day (u3)")
    lines(f / "hyp.trn", "hello world (u1)", "good day (u3)")
    return f / "ref.trn", f / "hyp.trn"


def validate(path: Path, *more) -> list:
    """`asr validate` of `path`, serially and without a progress bar."""
    return ["validate", path, "--no-progress", "--jobs", "1", *more]


TOTAL_1 = {"total": {"shards": 1, "utterances": 1, "seconds": 0.5}}

CASES = [
    # ---- asr validate: what later breaks training is a fault, and the exit is non-zero with one line
    Case("validate-3ms-clip", lambda f: validate(audio_row(f, wav(f / "a.wav", samples=48), 0.003)),
         r"too_short a: .*a\.wav: 48 samples"),
    Case("validate-1-sample-clip", lambda f: validate(audio_row(f, wav(f / "a.wav", samples=1), 1 / 16000)),
         r"too_short a: .*1 samples"),
    Case("validate-punctuation-only-text", lambda f: validate(manifest(f, row(f, text="?! ... --"))),
         r"empty_text a: transcript '\?! \.\.\. --' is empty after normalisation"),
    Case("validate-id-with-newline", lambda f: validate(manifest(f, row(f), row(f, uid="b\nc"))),
         r"bad_line .*m\.jsonl:2: 'id' holds a line break"),
    Case("validate-id-with-line-separator", lambda f: validate(manifest(f, row(f, uid="b\u2028c"))),
         r"m\.jsonl:1: 'id' holds a line break"),
    Case("validate-id-with-trailing-space", lambda f: validate(manifest(f, row(f, uid="a "))),
         r"m\.jsonl:1: 'id' has spaces at its ends: 'a '"),
    Case("validate-speaker-with-newline", lambda f: validate(manifest(f, row(f, speaker="s\n1"))),
         r"m\.jsonl:1: 'speaker' holds a line break"),
    Case("validate-empty-manifest", lambda f: validate(lines(f / "m.jsonl")),
         r"m\.jsonl: empty manifest"),
    Case("validate-blank-lines-only", lambda f: validate(lines(f / "m.jsonl", "", "   ", "")),
         r"m\.jsonl: empty manifest"),
    Case("validate-1-hz-header", lambda f: validate(audio_row(f, wav(f / "a.wav", sr=1, samples=3), 3.0)),
         r"unreadable_audio a: .*a\.wav: the header claims a sample rate of 1 Hz"),
    Case("validate-manifest-is-a-directory", lambda f: validate(f), r"is a directory, not a manifest"),
    Case("validate-manifest-is-a-fifo", lambda f: validate(fifo(f / "m.jsonl")),
         r"m\.jsonl: is not a regular file \(a FIFO\)"),
    Case("validate-manifest-is-a-device", lambda f: validate(Path(os.devnull)),
         r"/dev/null: is not a regular file \(a character device\)"),
    Case("validate-manifest-symlink-loop", lambda f: validate(loop(f / "m.jsonl")),
         r"m\.jsonl: is a symbolic link loop"),
    Case("validate-non-utf8-line", lambda f: validate(manifest(f, row(f), b'{"id": "\xff"}')),
         r"m\.jsonl:2: not UTF-8 text \(byte 0xff"),
    Case("validate-duplicate-ids", lambda f: validate(manifest(f, row(f), row(f))), r"duplicate_id a: used by 2"),
    Case("validate-absurd-duration", lambda f: validate(manifest(f, {**row(f), "duration": 1e308})),
         r"m\.jsonl:1: 'duration' must be a positive number of seconds up to"),
    Case("validate-audio-is-a-directory", lambda f: validate(audio_row(f, f)), r"missing_file a: .*is a directory"),
    Case("validate-audio-is-a-fifo", lambda f: validate(audio_row(f, fifo(f / "a.wav"))),
         r"missing_file a: .*a\.wav: is not a regular file \(a FIFO\)"),
    Case("validate-truncated-wav", lambda f: validate(truncated_wav(f)),
         r"truncated_audio a: .*cut\.wav: the WAV header declares 32000 bytes"),
    Case("validate-nan-tolerance", lambda f: validate(manifest(f, {**row(f), "duration": 9.0}), "--tolerance", "nan"),
         r"--tolerance must be a finite number"),
    Case("validate-json-list-line", lambda f: validate(manifest(f, row(f), "[1, 2]")),
         r"m\.jsonl:2: expected a JSON object, got list"),
    Case("validate-missing-keys", lambda f: validate(manifest(f, '{"id": "a", "audio": "a.wav"}')),
         r"m\.jsonl:1: missing key\(s\) duration, text"),
    Case("validate-negative-offset", lambda f: validate(manifest(f, {**row(f), "offset": -1})),
         r"m\.jsonl:1: 'offset' must be a number of seconds from 0"),
    Case("validate-deeply-nested-json", lambda f: validate(manifest(f, row(f), "[" * 100000 + "]" * 100000)),
         r"m\.jsonl:2: maximum recursion depth exceeded"),
    Case("validate-vocab-is-a-fifo", lambda f: validate(manifest(f), "--vocab", fifo(f / "v.txt")),
         r"--vocab .*v\.txt: is not a regular file \(a FIFO\)"),
    # ---- asr shard
    Case("shard-empty-manifest", lambda f: ["shard", lines(f / "m.jsonl"), "--out", f / "s", "--shard-size", 1],
         r"m\.jsonl: empty manifest"),
    Case("shard-audio-is-a-fifo",
         lambda f: ["shard", audio_row(f, fifo(f / "a.wav")), "--out", f / "s", "--shard-size", 1, "--no-progress"],
         r"a\.wav: is not a regular file \(a FIFO\)"),
    Case("shard-audio-is-a-device",
         lambda f: ["shard", audio_row(f, "/dev/zero"), "--out", f / "s", "--shard-size", 1, "--no-progress"],
         r"/dev/zero: is not a regular file \(a character device\)"),
    Case("shard-audio-symlink-loop",
         lambda f: ["shard", audio_row(f, loop(f / "a.wav")), "--out", f / "s", "--shard-size", 1, "--no-progress"],
         r"a\.wav: is a symbolic link loop"),
    Case("shard-prefix-with-a-folder",
         lambda f: ["shard", manifest(f), "--out", f / "s", "--shard-size", 1, "--prefix", "../escape",
                    "--no-progress"],
         r"prefix '\.\./escape' must be a plain file name"),
    Case("shard-out-is-a-file",
         lambda f: ["shard", manifest(f), "--out", manifest(f, name="x"), "--shard-size", 1, "--no-progress"],
         r"exists and is not a folder"),
    Case("shard-truncated-wav",
         lambda f: ["shard", truncated_wav(f), "--out", f / "s", "--shard-size", 1, "--no-progress"],
         r"cut\.wav is a truncated WAV \(the header declares 32000 bytes", code=0),
    Case("shard-id-with-carriage-return",
         lambda f: ["shard", manifest(f, row(f, uid="a\rb")), "--out", f / "s", "--shard-size", 1],
         r"m\.jsonl:1: 'id' holds a line break"),
    # ---- asr import-kaldi
    Case("import-kaldi-nan-segment", lambda f: ["import-kaldi", kaldi_dir(f, "a rec nan 0.4"), "--out", f / "m.jsonl"],
         r"k/segments:1: bad segment times start=nan"),
    Case("import-kaldi-empty-text", lambda f: ["import-kaldi", kaldi_dir(f, text=""), "--out", f / "m.jsonl"],
         r"k/text: no utterances"),
    Case("import-kaldi-out-is-a-directory", lambda f: ["import-kaldi", kaldi_dir(f), "--out", f],
         r"is a directory, not a manifest; not written over"),
    Case("import-kaldi-out-is-a-fifo", lambda f: ["import-kaldi", kaldi_dir(f), "--out", fifo(f / "m.jsonl")],
         r"m\.jsonl: is not a regular file \(a FIFO\); not written over"),
    # ---- asr vocab
    Case("vocab-only-punctuation",
         lambda f: ["vocab", manifest(f, row(f, text="...!"), row(f, uid="b", text="?")), "--out", f / "v.txt"],
         r"m\.jsonl: no characters: every transcript is empty after normalisation"),
    Case("vocab-out-is-a-directory", lambda f: ["vocab", manifest(f), "--out", f],
         r"--out .*: is a directory, not a vocabulary file; not written over"),
    Case("vocab-out-is-a-fifo", lambda f: ["vocab", manifest(f), "--out", fifo(f / "v.txt")],
         r"--out .*v\.txt: is not a regular file \(a FIFO\); not written over"),
    Case("vocab-out-in-a-missing-folder", lambda f: ["vocab", manifest(f), "--out", f / "no" / "v.txt"],
         r"--out .*v\.txt: cannot write the vocabulary: No such file"),
    Case("vocab-non-utf8-manifest", lambda f: ["vocab", manifest(f, b"\xfe\xff{}"), "--out", f / "v.txt"],
         r"m\.jsonl:1: not UTF-8 text \(byte 0xfe at column 1\)"),
    # ---- asr score
    Case("score-malformed-reference-is-named", lambda f: ["score", *bad_ref(f)],
         r"ref\.trn:2: not a trn line 'text \(id\)'"),
    Case("score-reads-ids-with-parentheses", lambda f: ["score", *trn_pair(f)],
         r"1 reference utterance\(s\) without a hypothesis, scored as empty: spk\(1\)-u2", code=0),
    Case("score-reference-is-a-directory", lambda f: ["score", f, trn_pair(f)[1]],
         r"is a directory, not a transcript file"),
    Case("score-reference-is-a-fifo", lambda f: ["score", fifo(f / "fifo.trn"), trn_pair(f)[1]],
         r"fifo\.trn: is not a regular file \(a FIFO\)"),
    Case("score-report-is-a-file", lambda f: ["score", *trn_pair(f), "--report", f / "ref.trn"],
         r"--report .*ref\.trn: exists and is not a folder"),
    Case("score-report-id-that-trn-cannot-hold",
         lambda f: ["score", lines(f / "ref.txt", "u( hello"), lines(f / "hyp.txt", "u( hello"), "--report", f / "r"],
         r"ref\.trn: utterance id 'u\(' cannot be written as a trn id"),
    # ---- asr evaluate: manifests, indexes and shards
    Case("evaluate-empty-manifest", lambda f: evaluate(lines(f / "m.jsonl")), r"m\.jsonl: empty manifest"),
    Case("evaluate-id-with-newline-and-report", lambda f: evaluate(manifest(f, row(f, uid="a\nb")), "--report", f / "r"),
         r"m\.jsonl:1: 'id' holds a line break"),
    Case("evaluate-index-total-not-an-object", lambda f: evaluate(index(f, {"total": 5})),
         r"x\.index\.jsonl:1: bad index row: 'total' must be an object"),
    Case("evaluate-index-row-is-a-string", lambda f: evaluate(index(f, '"total"')),
         r"x\.index\.jsonl:1: bad index row: expected a JSON object"),
    Case("evaluate-index-negative-count",
         lambda f: evaluate(index(f, {"shard": "a.tar", "utterances": -1, "seconds": 1}, TOTAL_1)),
         r"x\.index\.jsonl:1: bad index row: 'utterances' must be an integer >= 0"),
    Case("evaluate-index-shard-is-a-directory",
         lambda f: evaluate(index(f, {"shard": folder(f / "d.tar").name, "utterances": 1, "seconds": 0.5}, TOTAL_1)),
         r"1 of 1 shard file\(s\) not found or not readable, e\.g\. .*d\.tar: is a directory"),
    Case("evaluate-index-without-shards",
         lambda f: evaluate(index(f, {"total": {"shards": 0, "utterances": 0, "seconds": 0}})),
         r"x\.index\.jsonl: no shards to read"),
    Case("evaluate-index-lists-a-shard-twice",
         lambda f: evaluate(index_twice(f)),
         r"y\.index\.jsonl: shard 'x-000000\.tar' is listed twice"),
    Case("evaluate-shard-duration-nan", lambda f: evaluate(shard_with_ids(f, "a", duration=float("nan"))),
         r"1 of 1 utterances could not be read"),
    Case("evaluate-shard-id-with-newline", lambda f: evaluate(shard_with_ids(f, "a\nb"), "--report", f / "r"),
         r"1 of 1 utterances could not be read"),
    Case("evaluate-whole-file-longer-than-declared",
         lambda f: evaluate(audio_row(f, wav(f / "a.wav", 2.0), seconds=0.5)),
         r"the file lasts 2\.000 s but the manifest says 0\.5 s; only the first 0\.5 s are read", code=0),
    Case("evaluate-truncated-wav", lambda f: evaluate(truncated_wav(f)),
         r"cut\.wav\) in .*m\.jsonl: truncated WAV: the header declares 32000 bytes", code=0),
    # ---- asr train: bad data and config values stop it at once, in one line
    Case("train-lr-1e-3-and-empty-manifest", lambda f: train(f, lines(f / "m.jsonl"), "optim.lr=1e-3"),
         r"m\.jsonl: empty manifest"),
    Case("train-lr-5e-4-and-manifest-directory", lambda f: train(f, folder(f / "d.jsonl"), "optim.lr=5e-4"),
         r"d\.jsonl: is a directory, not a manifest"),
    Case("train-nan-batch-seconds", lambda f: train(f, manifest(f), "data.loader.batch_seconds=.nan"),
         r"batch_seconds: expected a finite number, got nan"),
    Case("train-negative-workers", lambda f: train(f, manifest(f), "data.loader.num_workers=-1"),
         r"loader: num_workers and shuffle_buffer must be >= 0"),
    Case("train-config-is-a-directory", lambda f: ["train", f], r"is a directory, not a config file"),
    Case("train-override-not-yaml", lambda f: train(f, manifest(f), "model=[1,"),
         r"override 'model=\[1,': the value is not valid YAML"),
    Case("train-index-total-row-is-a-string",
         lambda f: train(f, index(f, '"total"'), vocab_file=vocab(f)),
         r"x\.index\.jsonl:1: bad index row: expected a JSON object"),
    # ---- asr transcribe: audio that is not a regular file says what it is
    Case("transcribe-device", lambda f: ["transcribe", model(), "/dev/null", "--no-progress"],
         r"/dev/null: is not a regular file \(a character device\)"),
    Case("transcribe-1-hz-header", lambda f: ["transcribe", model(), wav(f / "a.wav", sr=1, samples=3), "--no-progress"],
         r"a\.wav: the header claims a sample rate of 1 Hz"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case: Case, tmp_path: Path, capsys, caplog, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_case(case, tmp_path, capsys, caplog)
