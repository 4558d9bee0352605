"""asr: Listen, Attend and Spell speech recognition.

Audio -> Kaldi-compatible features -> pyramidal BiLSTM listener -> attention
speller -> characters. See README.md for the command-line tour.

>>> import asr
>>> recognizer = asr.load_model("exp/fsdd/last.pt")  # doctest: +SKIP
>>> recognizer.transcribe(["one.wav"])  # doctest: +SKIP
['one']
"""

from __future__ import annotations

__version__ = "0.1.0"
# Public name -> the module that defines it, imported on first use so that `asr --help` does not
# pay for importing torch.
_EXPORTS = {
    "load_model": "asr.recognizer",
    "Recognizer": "asr.recognizer",
    "DecodeOptions": "asr.search",
    "TranscribeOptions": "asr.transcribe",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """The public names of `_EXPORTS`, imported from their modules when first used."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'asr' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazily imported public ones included."""
    return sorted(set(globals()) | set(__all__))
