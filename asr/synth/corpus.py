"""Build a synthetic read-speech corpus: sentences x TTS voices -> 16 kHz FLAC + JSON Lines manifests.

Layout written under the output folder:

    train.jsonl, test.jsonl     {"id", "audio", "duration", "text", "speaker"}; speaker = voice spec
    audio/<voice>/<id>.flac     16 kHz mono, 16-bit
    LICENSE.md                  text sources and their licences, voices, settings

The split is by voice *and* by sentence: test voices never speak in training, and
test sentences are never heard in training, so the test set measures generalisation
to unseen speakers reading unseen text. Every random choice (sentences, which voices
read a sentence, rate, pitch, noise, reverberation) derives from the seed and the
utterance's index, so the corpus is the same whatever the number of processes.
"""

from __future__ import annotations

import json
import logging
import os
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr.errors import AsrError
from asr.synth import text as text_sources
from asr.synth.voices import DEFAULT_TEST_VOICES, DEFAULT_TRAIN_VOICES, SAMPLE_RATE, Prosody, Voice, VoiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusOptions:
    """What corpus to synthesise."""

    sentences: int = 1000  # distinct sentences, shared out between the train and test splits
    train_voices: tuple[str, ...] = DEFAULT_TRAIN_VOICES  # ENGINE:NAME voices heard in training
    test_voices: tuple[str, ...] = DEFAULT_TEST_VOICES  # voices kept out of training
    voices_per_sentence: int | None = None  # voices of its split reading each sentence (None: all of them)
    rate_range: tuple[float, float] = (0.85, 1.2)  # speaking-rate factor, drawn uniformly per utterance
    pitch_range: tuple[float, float] = (0.9, 1.12)  # pitch factor, drawn uniformly per utterance
    noise_snr: float | None = None  # add white noise at this SNR in dB to training audio (None: clean)
    reverb: float = 0.0  # probability that a training utterance is reverberated
    sources: tuple[str, ...] | None = None  # text sources (None: every installed one)
    seed: int = 0  # seed of every random choice
    jobs: int = 2  # synthesis processes


@dataclass(frozen=True)
class Job:
    """One utterance to synthesise."""

    utt_id: str  # manifest id
    voice: str  # ENGINE:NAME
    text: str  # transcript, spoken as is
    rate: float  # Prosody.rate
    pitch: float  # Prosody.pitch
    seed: int  # seed of this utterance's augmentation
    snr_db: float | None  # noise SNR, None for none
    reverb: float  # reverberation probability
    audio: str  # output path relative to the corpus folder


@dataclass
class CorpusSummary:
    """What a build produced."""

    out: Path  # corpus folder
    counts: dict[str, int] = field(default_factory=dict)  # split -> utterances written
    hours: dict[str, float] = field(default_factory=dict)  # split -> hours of audio
    failed: list[str] = field(default_factory=list)  # ids the engine could not speak
    sources: dict[str, int] = field(default_factory=dict)  # source -> sentences used


def plan(options: CorpusOptions, per_source: dict[str, list[str]]) -> dict[str, list[Job]]:
    """The jobs of each split ("train", "test"), in a fixed order, from sentences per source."""
    train_voices = [Voice.parse(v).spec for v in options.train_voices]
    test_voices = [Voice.parse(v).spec for v in options.test_voices]
    if not train_voices:
        raise AsrError("synthetic corpus: no training voice given")
    if options.sentences < 1 or options.jobs < 1 or not 0.0 <= options.reverb <= 1.0:
        raise AsrError(f"synthetic corpus: need sentences >= 1, jobs >= 1, 0 <= reverb <= 1 (got {options.sentences}, "
                       f"{options.jobs}, {options.reverb})")
    if options.voices_per_sentence is not None and options.voices_per_sentence < 1:
        raise AsrError(f"synthetic corpus: voices per sentence must be >= 1 (got {options.voices_per_sentence})")
    if overlap := sorted(set(train_voices) & set(test_voices)):
        raise AsrError(f"synthetic corpus: voices both in training and test: {', '.join(overlap)}")
    chosen = [s for _, s in text_sources.sample_sentences(per_source, options.sentences, options.seed)]
    n_test = 0
    if test_voices:
        n_test = max(1, round(len(chosen) * len(test_voices) / (len(train_voices) + len(test_voices))))
        if n_test >= len(chosen):
            raise AsrError(f"synthetic corpus: {options.sentences} sentences are too few to split by voice")
    splits = {"train": (chosen[n_test:], train_voices), "test": (chosen[:n_test], test_voices)}
    jobs: dict[str, list[Job]] = {}
    for split, (sentences, voices) in splits.items():
        rng = random.Random(f"{options.seed}-{split}")
        augment = split == "train"
        jobs[split] = []
        for k, sentence in enumerate(sentences):
            readers = voices
            if options.voices_per_sentence is not None and options.voices_per_sentence < len(voices):
                readers = sorted(rng.sample(voices, options.voices_per_sentence), key=voices.index)
            for voice in readers:
                slug = Voice.parse(voice).slug
                utt_id = f"{slug}-{split}-{k:06d}"
                jobs[split].append(Job(
                    utt_id=utt_id, voice=voice, text=sentence,
                    rate=round(rng.uniform(*options.rate_range), 3), pitch=round(rng.uniform(*options.pitch_range), 3),
                    seed=rng.randrange(2**32), snr_db=options.noise_snr if augment else None,
                    reverb=options.reverb if augment else 0.0, audio=f"audio/{slug}/{utt_id}.flac",
                ))
    return jobs


def synthesize_job(job: Job, out: str) -> tuple[str, float | None]:
    """Speak, degrade and write one utterance; returns (id, duration in s), duration None when the engine failed."""
    from asr.audio import save_audio
    from asr.synth.augment import degrade

    try:
        wave = Voice.parse(job.voice).synthesize(job.text, Prosody(job.rate, job.pitch)).numpy()  # (N,)
    except VoiceError as err:
        log.warning("%s: %s", job.utt_id, err)
        return job.utt_id, None
    if job.snr_db is not None or job.reverb > 0:
        wave = degrade(wave, np.random.default_rng(job.seed), snr_db=job.snr_db, reverb_prob=job.reverb)
    path = Path(out) / job.audio
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, np.clip(wave, -1.0, 1.0), SAMPLE_RATE)
    return job.utt_id, wave.shape[0] / SAMPLE_RATE


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; resampling threads would only fight for it


def build_corpus(out: str | os.PathLike, options: CorpusOptions = CorpusOptions(), *, progress: bool = True) -> CorpusSummary:
    """Synthesise the corpus described by `options` into `out`, in `options.jobs` processes."""
    from tqdm import tqdm

    out = Path(out)
    for spec in options.train_voices + options.test_voices:
        if not Voice.parse(spec).available():
            raise VoiceError(f"voice {spec}: its engine is not installed")
    per_source = text_sources.collect_sentences(options.sources)
    jobs = plan(options, per_source)
    out.mkdir(parents=True, exist_ok=True)
    every = [job for split in jobs.values() for job in split]
    durations: dict[str, float | None] = {}
    with tqdm(total=len(every), desc="synth", unit="utt", disable=not progress) as bar:
        if options.jobs > 1 and len(every) > 1:
            with ProcessPoolExecutor(max_workers=options.jobs, initializer=_init_worker) as pool:
                for utt_id, duration in pool.map(synthesize_job, every, [str(out)] * len(every), chunksize=4):
                    durations[utt_id] = duration
                    bar.update(1)
        else:
            for job in every:
                utt_id, durations[utt_id] = synthesize_job(job, str(out))
                bar.update(1)
    summary = CorpusSummary(out=out)
    for split, split_jobs in jobs.items():
        summary.counts[split], summary.hours[split] = write_manifest(out / f"{split}.jsonl", split_jobs, durations)
    summary.failed = sorted(k for k, d in durations.items() if d is None)
    used = {job.text for job in every}
    summary.sources = {name: sum(s in used for s in sentences) for name, sentences in per_source.items()}
    write_provenance(out / "LICENSE.md", options, per_source, summary)
    return summary


def write_manifest(path: Path, jobs: list[Job], durations: dict[str, float | None]) -> tuple[int, float]:
    """Write the manifest lines of the jobs that produced audio; returns (utterances, hours)."""
    count, seconds = 0, 0.0
    with open(path, "w", encoding="utf-8") as f:
        for job in jobs:
            duration = durations.get(job.utt_id)
            if duration is None:
                continue
            line = {"id": job.utt_id, "audio": job.audio, "duration": round(duration, 4), "text": job.text,
                    "speaker": job.voice}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            count, seconds = count + 1, seconds + duration
    return count, seconds / 3600


ENGINE_LICENCES = {
    "espeak": "espeak-ng (GPL-3.0-or-later)",
    "flite": "CMU Flite and its voices (BSD-like CMU licence)",
    "festival": "Festival Speech Synthesis System with festvox voices (BSD-like licences)",
    "piper": "piper-tts (GPL-3.0-or-later); the voice's own licence is in its MODEL_CARD",
}


def write_provenance(path: Path, options: CorpusOptions, per_source: dict[str, list[str]], summary: CorpusSummary) -> None:
    """LICENSE.md of the corpus: where the text comes from and under what licence, which voices spoke it."""
    lines = ["# Synthetic read-speech corpus", "", "## Text sources", "",
             "| source | text | licence | Debian package | sentences available | sentences used |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, sentences in per_source.items():
        src = text_sources.SOURCES[name]
        lines.append(f"| {name} | {src.title} | {src.licence} | {src.package} | {len(sentences)} | "
                     f"{summary.sources.get(name, 0)} |")
    lines += ["", "Sentences were lower-cased and stripped of punctuation; sentences with digits or markup were "
              "dropped.", "", "## Voices", ""]
    for split, voices in (("train", options.train_voices), ("test", options.test_voices)):
        for spec in voices:
            lines.append(f"- {spec} ({split}); engine: {ENGINE_LICENCES[Voice.parse(spec).engine]}")
    lines += ["", "## Settings", "", "```", json.dumps({k: v for k, v in vars(options).items()}, indent=1), "```", "",
              f"Utterances: {summary.counts}; hours: {({k: round(v, 3) for k, v in summary.hours.items()})}; "
              f"failed: {len(summary.failed)}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
