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
__all__ = ["load_model", "Recognizer"]


def __getattr__(name: str):
    # Imported on first use so that `asr --help` does not pay for importing torch.
    if name in __all__:
        from asr import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'asr' has no attribute {name!r}")
