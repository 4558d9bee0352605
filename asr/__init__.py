"""asr: Listen, Attend and Spell speech recognition.

Audio -> Kaldi-compatible features -> pyramidal BiLSTM listener -> attention
speller -> characters. See README.md for the command-line tour.
"""

__version__ = "0.1.0"
