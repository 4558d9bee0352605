"""Decode a test set and score it: WER/CER with sclite's counts, real-time factor, per-utterance report.

    manifest or shards -> make_loader (no shuffling, duration buckets) -> Recognizer.decode
      -> text per utterance; the reference normalised by the recognizer's tokenizer
      -> asr.scoring (sclite's alignment) -> summary (asr.reports.corpus_summary) [+ report directory]

The real-time factor is decode wall time (features, encoder and search, on the
recognizer's device) over seconds of audio; reading and resampling the audio is
not counted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from asr.data.loader import make_loader
from asr.data.sources import Source
from asr.errors import AsrError
from asr.files import os_reason
from asr.reports import UtteranceResult, corpus_summary, write_report
from asr.scoring import score_utterance
from asr.search import DecodeOptions

if TYPE_CHECKING:
    from asr.recognizer import Recognizer

log = logging.getLogger(__name__)


def evaluate(recognizer: Recognizer, source: Source, options: DecodeOptions = DecodeOptions(), *,
             lm: torch.nn.Module | None = None, batch_seconds: float = 100.0, max_batch_size: int | None = None,
             report_dir: str | os.PathLike | None = None, progress: bool = True,
             missing_as_deletions: bool = False) -> dict[str, Any]:
    """Decode every utterance of `source` (manifest, shard index, shard URLs) and score it.

    Returns the summary of asr.reports.corpus_summary: wer, cer (percent), substitutions,
    deletions, insertions, hits, words, chars, sentence_errors, utterances, missing (utterances
    the loader could not read), rtf, audio_seconds, decode_seconds. An unreadable utterance is
    left out of the scores, or, with `missing_as_deletions` and a manifest (whose references are
    known without the audio), scored with an empty hypothesis. With `report_dir`, also writes
    results.jsonl, ref.trn, hyp.trn and summary.json there.
    """
    # Every readable utterance is scored: no duration filter, and audio whose length differs from
    # the manifest's is decoded anyway (training skips it as a sign of a broken manifest).
    loader = make_loader(source, sample_rate=recognizer.sample_rate, shuffle=False, rank=0, world_size=1,
                         num_workers=0, batch_seconds=batch_seconds, max_batch_size=max_batch_size,
                         duration_tolerance=None, min_audio_seconds=None)  # short clips are padded
    tokenizer, device = recognizer.tokenizer, recognizer.device
    results: list[UtteranceResult] = []
    decode_seconds = audio_seconds = 0.0
    errors = words = 0
    bar = tqdm(total=_count(loader), unit="utt", desc="evaluate", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    with bar:
        for batch in loader:
            waves, lengths = batch.waves.to(device), batch.wave_lengths.to(device)
            _sync(device)
            start = time.perf_counter()
            nbest = recognizer.decode(waves, lengths, options, lm)
            _sync(device)
            decode_seconds += time.perf_counter() - start
            audio_seconds += float(batch.wave_lengths.sum()) / recognizer.sample_rate
            for i, uid in enumerate(batch.ids):
                ref = tokenizer.normalize(batch.texts[i])
                best = nbest[i][0]
                hyp = tokenizer.decode(best.tokens)
                scored = score_utterance(ref, hyp)
                duration = round(int(batch.wave_lengths[i]) / recognizer.sample_rate, 4)
                results.append(UtteranceResult(uid, ref, hyp, scored, batch.speakers[i], duration, best.fallback))
                errors += scored.errors
                words += scored.words.reference_length
            bar.update(len(batch.ids))
            bar.set_postfix(wer=f"{100.0 * errors / max(words, 1):.2f}%", refresh=False)
    missing = loader.skipped + loader.dropped
    if missing and missing_as_deletions and loader.source.is_manifest:
        results.extend(_unread_as_deletions(loader.source.utterances, {r.id for r in results}, tokenizer))
    if missing:
        scored = "scored as deletions" if missing_as_deletions and loader.source.is_manifest else "not scored"
        log.warning("%s: %d utterance(s) could not be read (%s)", loader.source.name, missing, scored)
    summary = corpus_summary(results, missing=missing, audio_seconds=audio_seconds, decode_seconds=decode_seconds)
    summary["expected"] = _count(loader)
    if options.ctc_fallback > 0:
        summary["ctc_fallbacks"] = sum(r.fallback for r in results)
    if report_dir is not None:
        details = {**summary, "source": loader.source.name, "device": str(device),
                   "decode_options": dataclasses.asdict(options)}
        try:
            write_report(report_dir, results, details)
        except OSError as err:
            where = err.filename or report_dir
            raise AsrError(f"{where}: report not written: {os_reason(err)}") from None
    return summary


def _unread_as_deletions(utterances, read: set[str], tokenizer) -> list[UtteranceResult]:
    """The manifest utterances never decoded, each with an empty hypothesis (all its words deleted)."""
    out = []
    for utt in utterances:
        if utt.id not in read:
            ref = tokenizer.normalize(utt.text)
            out.append(UtteranceResult(utt.id, ref, "", score_utterance(ref, ""), utt.speaker, None))
    return out


def _count(loader) -> int | None:
    """Utterances the loader will read, when known (manifests, shard indexes)."""
    src = loader.source
    if src.is_manifest:
        return len(src.utterances)
    counts = [s.utterances for s in src.shards]
    return None if any(c is None for c in counts) else sum(counts)


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
