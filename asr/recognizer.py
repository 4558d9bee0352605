"""A trained recognizer: model + tokenizer + config, built from one checkpoint file.

`build_model` is the one place that turns configs into a LAS model, so training
and `load_model` cannot build different networks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from asr.audio import SAMPLE_RATE, load_audio
from asr.checkpoint import load_checkpoint
from asr.config import from_dict
from asr.errors import AsrError
from asr.features import CMVNStats, Frontend, FrontendConfig, compute_cmvn
from asr.models.las import LAS, LASConfig, build_las
from asr.search import greedy_search
from asr.text import CharTokenizer, NormalizerConfig

log = logging.getLogger(__name__)


def load_tokenizer(vocab: str | None, train_source: str, normalizer: NormalizerConfig | None = None) -> CharTokenizer:
    """The vocabulary file `vocab`, or one built from `train_source` when that is a manifest."""
    if vocab:
        return CharTokenizer.load(vocab, normalizer=normalizer)
    if str(train_source).endswith(".jsonl"):
        from asr.data.manifest import read_manifest

        return CharTokenizer.from_texts((u.text for u in read_manifest(train_source)), normalizer=normalizer)
    raise AsrError(f"data.vocab is required when training from shards ({train_source}); make one with `asr vocab`")


def build_model(frontend_cfg: FrontendConfig, model_cfg: LASConfig, tokenizer: CharTokenizer) -> LAS:
    """The LAS model with its feature front-end, sized for `tokenizer`."""
    frontend = Frontend(frontend_cfg)
    return build_las(model_cfg, vocab_size=len(tokenizer), frontend=frontend, input_dim=frontend.output_dim,
                     go_id=tokenizer.go_id, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)


@torch.no_grad()
def compute_global_cmvn(model: LAS, source: str, *, limit: int, device: torch.device) -> CMVNStats:
    """Feature statistics of the first `limit` utterances of `source`, stored in the model's CMVN."""
    from asr.data.loader import make_loader

    frontend = model.frontend
    loader = make_loader(source, sample_rate=frontend.cfg.features.sample_rate, shuffle=False, rank=0,
                         world_size=1, num_workers=0, batch_seconds=200.0)

    def first_batches():
        seen = 0
        for batch in loader:
            yield batch.waves.to(device), batch.wave_lengths.to(device)
            seen += len(batch.ids)
            if seen >= limit:
                return

    stats = compute_cmvn(frontend.features, first_batches())
    frontend.set_cmvn(stats)
    log.info("global CMVN from %d frames of %s", int(stats.count), source)
    return stats


@dataclass
class Recognizer:
    """What `asr.load_model` returns: turns audio files into text."""

    model: LAS
    tokenizer: CharTokenizer
    config: dict[str, Any]  # the resolved training config stored in the checkpoint

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.model.frontend.cfg.features.sample_rate

    @torch.no_grad()
    def transcribe(self, paths: Sequence[str | Path], *, batch_size: int = 8) -> list[str]:
        """Greedy transcripts of whole audio files, in order (any format, rate and channel count)."""
        self.model.eval()
        texts: list[str] = []
        for start in range(0, len(paths), batch_size):
            waves = [load_audio(p, self.sample_rate) for p in paths[start : start + batch_size]]
            lengths = torch.tensor([len(w) for w in waves])
            batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True).to(self.device)
            enc, enc_lengths = self.model.encode(batch, lengths.to(self.device))
            texts += [self.tokenizer.decode(t) for t in greedy_search(self.model, enc, enc_lengths)]
        return texts


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    """Rebuild a recognizer from a checkpoint file alone (config, vocabulary, CMVN, weights)."""
    ckpt = load_checkpoint(path)
    config = ckpt["config"]
    text_cfg = from_dict(NormalizerConfig, config.get("text", {}))
    tokenizer = CharTokenizer(ckpt["vocab"], normalizer=text_cfg)
    model = build_model(from_dict(FrontendConfig, config["frontend"]), from_dict(LASConfig, config["model"]), tokenizer)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return Recognizer(model=model, tokenizer=tokenizer, config=config)


__all__ = ["Recognizer", "build_model", "load_model", "load_tokenizer", "compute_global_cmvn", "SAMPLE_RATE"]
