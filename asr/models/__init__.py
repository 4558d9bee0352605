"""The network: pyramidal BiLSTM listener, attention speller, CTC head, and LAS joining them."""

from __future__ import annotations

from asr.models.attention import AttentionConfig, build_attention
from asr.models.ctc import CTCHead
from asr.models.las import LAS, LASConfig, build_las
from asr.models.listener import Listener, ListenerConfig
from asr.models.speller import DecoderState, Speller, SpellerConfig

__all__ = [
    "AttentionConfig", "CTCHead", "DecoderState", "LAS", "LASConfig", "Listener", "ListenerConfig",
    "Speller", "SpellerConfig", "build_attention", "build_las",
]
