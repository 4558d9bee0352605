"""A randomly initialised recognizer small enough to decode in milliseconds, for the decoding tests."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from asr.features import FeatureConfig, FrontendConfig
from asr.models.attention import AttentionConfig
from asr.models.las import LASConfig
from asr.models.listener import ListenerConfig
from asr.models.speller import SpellerConfig
from asr.recognizer import Recognizer
from asr.text import CharTokenizer


def tiny_model(path: Path, texts: Sequence[str], *, ctc_weight: float = 0.3, seed: int = 0) -> Path:
    """Save a tiny random recognizer whose vocabulary covers `texts` at `path`."""
    torch.manual_seed(seed)
    tokenizer = CharTokenizer.from_texts(texts)
    model = LASConfig(listener=ListenerConfig(layers=2, hidden=16, reduce=(2, 2), projection=16),
                      speller=SpellerConfig(embed_dim=8, hidden=16,
                                            attention=AttentionConfig(dim=16, conv_channels=2, conv_kernel=5)),
                      ctc_weight=ctc_weight)
    recognizer = Recognizer.build(FrontendConfig(features=FeatureConfig(n_mels=20), cmvn="utterance"), model, tokenizer)
    with torch.no_grad():  # never emit blank/[GO], rarely end early: transcripts are non-empty and vary
        bias = recognizer.model.speller.output.bias
        bias[[tokenizer.blank_id, tokenizer.go_id]] = -10.0
        bias[tokenizer.eos_id] -= 2.0
    recognizer.save(path)
    return path
