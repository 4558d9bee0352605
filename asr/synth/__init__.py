"""Synthetic read-speech corpora: offline English text spoken by offline TTS voices (`asr synth`)."""
