"""A trained recognizer: model + tokenizer + config, built from one checkpoint file.

`build_model` is the one place that turns configs into a LAS model, so training
and `load_model` cannot build different networks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from asr.audio import SAMPLE_RATE
from asr.checkpoint import CheckpointError, load_checkpoint, load_fitting, save_checkpoint
from asr.config import from_dict, to_dict
from asr.distributed import resolve_device
from asr.errors import AsrError
from asr.features import CMVNStats, Frontend, FrontendConfig, compute_cmvn
from asr.models.las import LAS, LASConfig, build_las
from asr.search import DecodeOptions, Hypothesis, decode
from asr.text import CharTokenizer, NormalizerConfig

if TYPE_CHECKING:
    from asr.transcribe import Transcript

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


MIN_DECODE_SECONDS = 0.2  # shorter audio is zero-padded to this length (the listener needs a few frames)


class LMVocabularyError(AsrError):
    """A language model whose vocabulary differs from the recognizer's."""


@dataclass
class Recognizer:
    """What `asr.load_model` returns: turns audio files, or batches of waveforms, into text."""

    model: LAS
    tokenizer: CharTokenizer
    config: dict[str, Any]  # the resolved training config stored in the checkpoint (frontend, model, text...)

    @classmethod
    def build(cls, frontend: FrontendConfig, model: LASConfig, tokenizer: CharTokenizer,
              text: NormalizerConfig | None = None) -> Recognizer:
        """A randomly initialised recognizer (for tests, tools and benchmarks); `save` writes it as a model file."""
        config = {"frontend": to_dict(frontend), "model": to_dict(model), "text": to_dict(text or NormalizerConfig())}
        return cls(build_model(frontend, model, tokenizer).eval(), tokenizer, config)

    def save(self, path: str | Path) -> None:
        """Write a model file that `load_model` reads back (config, vocabulary, weights incl. CMVN).

        Refused for a recognizer loaded with a lower decoding precision: its weights are rounded, and
        a model file holds the full-precision weights it was trained to."""
        dtype = self.model.decoding_dtype
        if dtype != torch.float32:
            raise AsrError(f"{path}: not saved: this recognizer decodes in {str(dtype).removeprefix('torch.')} and "
                           "its weights are rounded; save the one loaded with dtype='float32'")
        save_checkpoint({"config": self.config, "vocab": self.tokenizer.symbols, "model": self.model.state_dict()},
                        path)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    @property
    def sample_rate(self) -> int:
        """Hz of the waveforms the model expects."""
        return self.model.frontend.cfg.features.sample_rate

    def load_lm(self, path: str | Path) -> torch.nn.Module:
        """The character LM of `path` on this recognizer's device; its vocabulary must be the recognizer's."""
        from asr.models.lm import load_lm

        lm = load_lm(path, device=self.device)
        if list(getattr(lm, "vocab", [])) != self.tokenizer.symbols:
            raise LMVocabularyError(f"{path}: the language model's vocabulary differs from the recognizer's "
                                    f"({len(getattr(lm, 'vocab', []))} vs {len(self.tokenizer)} symbols); "
                                    "train it with the recognizer's vocabulary file")
        return lm

    def _encode(self, waves: Tensor, wave_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder output of padded waveforms (B, N) on this device, tiny clips padded to decodable length."""
        self.model.eval()
        waves, wave_lengths = pad_short(waves.to(self.device), wave_lengths.to(self.device),
                                        int(MIN_DECODE_SECONDS * self.sample_rate))
        return self.model.encode(waves, wave_lengths)

    @torch.no_grad()
    def decode(self, waves: Tensor, wave_lengths: Tensor, options: DecodeOptions = DecodeOptions(),
               lm: torch.nn.Module | None = None) -> list[list[Hypothesis]]:
        """N-best hypotheses of padded waveforms (B, N) at `sample_rate` with lengths (B,), best first."""
        enc, enc_lengths = self._encode(waves, wave_lengths)
        return decode(self.model, enc, enc_lengths, options, lm)

    def decode_texts(self, waves: Tensor, wave_lengths: Tensor, options: DecodeOptions = DecodeOptions(),
                     lm: torch.nn.Module | None = None) -> list[str]:
        """The best hypothesis of each waveform as text (see `decode`)."""
        return [self.tokenizer.decode(nbest[0].tokens) for nbest in self.decode(waves, wave_lengths, options, lm)]

    @torch.no_grad()
    def attention(self, wave: Tensor, tokens: Sequence[int]) -> Tensor:
        """Attention weights (U + 1, T') of the speller fed [GO] + tokens over one waveform (N,).

        Row u is where the speller looks when it emits token u (the last row: [EOS]). Feeding the
        best hypothesis's tokens gives the attention of the search that found it.
        """
        enc, enc_lengths = self._encode(wave.reshape(1, -1), torch.tensor([wave.shape[-1]]))
        targets = torch.tensor([list(tokens)], dtype=torch.long, device=self.device).reshape(1, -1)
        tokens_in, _, _ = self.model.teacher_inputs(targets, torch.tensor([len(tokens)], device=self.device))
        _, weights = self.model.speller(enc, enc_lengths, tokens_in)  # (1, U + 1, T')
        return weights[0, :, : int(enc_lengths[0])].float().cpu()

    def transcribe(self, paths: str | Path | Sequence[str | Path], *, options: DecodeOptions = DecodeOptions(),
                   lm: torch.nn.Module | None = None, timestamps: bool = False, **transcribe_options: Any
                   ) -> list[str] | list[Transcript]:
        """Transcripts of audio files in order: any format, sample rate, channel count and length.

        Files longer than one segment are cut by the energy segmenter (asr.segment) and read
        piece by piece, so memory stays bounded. Returns texts, or `Transcript`s (text and
        timed segments) with `timestamps=True`; `transcribe_options` are TranscribeOptions
        fields. Raises AsrError naming every file that could not be read, after trying all.
        """
        from asr.transcribe import TranscribeOptions, TranscriptionError, transcribe_files

        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        results = list(transcribe_files(self, paths, TranscribeOptions(**transcribe_options), options, lm))
        failed = [t.error for t in results if t.error is not None]
        if failed:
            raise TranscriptionError(f"{len(failed)} of {len(paths)} file(s) failed: " + "; ".join(failed))
        return results if timestamps else [t.text for t in results]


def pad_short(waves: Tensor, wave_lengths: Tensor, min_samples: int) -> tuple[Tensor, Tensor]:
    """Zero-pad waveforms (B, N) shorter than `min_samples` (lengths raised to it): tiny clips still decode."""
    if wave_lengths.numel() == 0 or int(wave_lengths.min()) >= min_samples:
        return waves, wave_lengths
    if waves.shape[1] < min_samples:
        waves = torch.nn.functional.pad(waves, (0, min_samples - waves.shape[1]))
    return waves, wave_lengths.clamp(min=min_samples)


DECODING_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: str = "float32") -> Recognizer:
    """Rebuild a recognizer from a checkpoint file alone (config, vocabulary, CMVN, weights).

    `device` may be "auto": the GPU when there is one, else the CPU. `dtype` "bfloat16" decodes
    with the listener, speller and CTC head in bfloat16 (see LAS.set_decoding_dtype).
    """
    if dtype not in DECODING_DTYPES:
        raise AsrError(f"dtype {dtype!r}: choose one of {', '.join(DECODING_DTYPES)}")
    ckpt = load_checkpoint(path)
    config = ckpt.get("config")
    if not isinstance(config, dict) or "frontend" not in config or "model" not in config or "vocab" not in ckpt:
        raise CheckpointError(f"{path}: not a recognizer model (no frontend/model config or vocabulary)")
    try:
        text_cfg = from_dict(NormalizerConfig, config.get("text", {}))
        tokenizer = CharTokenizer(ckpt["vocab"], normalizer=text_cfg)
        model = build_model(from_dict(FrontendConfig, config["frontend"]), from_dict(LASConfig, config["model"]),
                            tokenizer)
    except (AsrError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: its config cannot build a model: {err}") from None
    load_fitting(model, ckpt["model"], path, hint="the checkpoint's weights do not fit the model its config describes")
    model.to(resolve_device(device) if isinstance(device, str) else device).eval()
    model.set_decoding_dtype(DECODING_DTYPES[dtype])
    return Recognizer(model=model, tokenizer=tokenizer, config=config)


__all__ = ["Recognizer", "build_model", "load_model", "load_tokenizer", "compute_global_cmvn", "pad_short",
           "SAMPLE_RATE"]
