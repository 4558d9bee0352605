"""`fit(cfg)`: train a LAS model, single process or under torchrun, and never lose work.

Reads top to bottom: set-up (device, DDP, seeds), vocabulary and model, resume
from the run directory, then epochs of (batch -> loss -> backward -> update),
with logs, validation, plots and checkpoints at the configured intervals.

Exact resume: the loader's order is a pure function of (seed, epoch), so a
resumed run skips the batches already seen in the epoch, then restores every
RNG, the optimizer, the schedule and the gradient scaler. On CPU the resumed
run reaches the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch.nn.parallel import DistributedDataParallel

from asr import distributed
from asr.checkpoint import (
    best_step,
    init_weights,
    load_first_good,
    load_fitting,
    remove_stale_temporaries,
    save_checkpoint,
    vocab_difference,
)
from asr.config import save_config, to_dict
from asr.data.loader import LoaderConfig, make_loader
from asr.errors import AsrError
from asr.features import FrontendConfig
from asr.files import os_reason, output_folder
from asr.folder_lock import FolderLock, command_line
from asr.models.las import LASConfig
from asr.optim import OptimConfig, Schedule, build_optimizer
from asr.plots import plot_attention, plot_learning_curves
from asr.recognizer import build_model, compute_global_cmvn, load_tokenizer
from asr.scoring import score_texts
from asr.search import greedy_search
from asr.text import NormalizerConfig

log = logging.getLogger(__name__)


class TrainingError(AsrError):
    """Training cannot go on (for example the loss keeps being non-finite)."""


class TrainingStopped(Exception):
    """A signal (SIGTERM) stopped training at an update boundary, after a checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; {checkpoint} holds it: run the "
                         "same command again to resume")


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is batched."""

    train: str  # shards (folder, index file, brace pattern, URLs, pipe:) or a JSON Lines manifest
    dev: str | None = None  # validation set, same forms
    vocab: str | None = None  # vocabulary file; None = built from `train` when it is a manifest
    loader: LoaderConfig = field(default_factory=lambda: LoaderConfig(
        batch_seconds=120.0, num_workers=2, max_duration=20.0))  # batching; sample_rate follows the front-end
    cmvn_utterances: int = 1000  # utterances used for the global CMVN statistics


@dataclass(frozen=True)
class TrainConfig:
    """Length of training, device and precision, and what is written when."""

    epochs: int = 20  # passes over the training data
    max_steps: int = 0  # stop after this many updates (0 = no limit)
    max_minutes: float = 0.0  # stop after this much wall time (0 = no limit), at an update boundary, with a checkpoint
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["none", "bf16", "fp16"] = "none"  # mixed precision on CUDA (fp16 uses a gradient scaler)
    seed: int = 0  # seeds model init, data order, dropout and SpecAugment
    log_every: int = 20  # updates between JSON Lines log records
    validate_every: int = 0  # updates between validations (0 = at the end of each epoch)
    checkpoint_every: int = 0  # updates between `last.pt` writes (0 = at each validation)
    keep_best: int = 3  # best checkpoints kept (ranked by best_by)
    # Fine-tuning: a checkpoint whose weights (CMVN statistics included) start a fresh run; its
    # vocabulary and every shape must match. Ignored when the run resumes from its own checkpoint.
    init_from: str | None = None
    # CTC-weight schedule: the loss weight of CTC goes linearly from ctc_weight_start to
    # model.ctc_weight over the first ctc_weight_steps updates (None: model.ctc_weight throughout).
    # Starting high lets the encoder learn to read speech through CTC before the attention aligns.
    ctc_weight_start: float | None = None
    ctc_weight_steps: int = 0
    # What ranks them: dev loss, or the greedy dev CER / WER of each validation. With label
    # smoothing the dev loss can rise while the error rates still fall (a model's attention
    # learning to align late), and the loss then keeps checkpoints from before the alignment.
    best_by: Literal["loss", "cer", "wer"] = "loss"
    max_nonfinite: int = 10  # consecutive non-finite updates before training stops
    plot_utterances: int = 3  # dev utterances shown in the attention plot
    decode_max_ratio: float = 1.0  # greedy validation decode: max tokens per encoder frame

    def __post_init__(self) -> None:
        # Written as the values each accepts: nan passes no comparison.
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs} (nothing would be trained)")
        if self.max_steps < 0 or not 0 <= self.max_minutes < math.inf:
            raise ValueError(f"train.max_steps and train.max_minutes must be >= 0 (0 = no limit), got "
                             f"{self.max_steps} and {self.max_minutes}")
        if self.log_every < 1 or self.max_nonfinite < 1:
            raise ValueError(f"train.log_every and train.max_nonfinite must be >= 1, got {self.log_every} and "
                             f"{self.max_nonfinite}")
        if min(self.validate_every, self.checkpoint_every, self.keep_best, self.plot_utterances,
               self.ctc_weight_steps) < 0:
            raise ValueError("train.validate_every, checkpoint_every, keep_best, plot_utterances and "
                             "ctc_weight_steps must be >= 0")
        if not 0 < self.decode_max_ratio < math.inf:
            raise ValueError(f"train.decode_max_ratio must be a positive number, got {self.decode_max_ratio}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything `asr train` needs; stored resolved in the run directory and every checkpoint."""

    data: DataConfig
    out_dir: str = "exp/run"  # run directory: config, logs, plots, checkpoints
    text: NormalizerConfig = field(default_factory=NormalizerConfig)  # transcript normalisation
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    model: LASConfig = field(default_factory=LASConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class TrainState:
    """Counters saved in every checkpoint so a run continues where it stopped."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # current epoch
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    nonfinite_total: int = 0  # updates skipped for non-finite gradients
    nonfinite_run: int = 0  # ... in a row
    best: list = field(default_factory=list)  # [[dev score, file name], ...] ascending, score as ranked by best_by
    best_by: str = "loss"  # the dev score `best` holds
    history: list = field(default_factory=list)  # log records, for the learning curve


def fit(cfg: ExperimentConfig, *, resume: bool | None = None, progress: bool = True) -> Path:
    """Train according to `cfg`; returns the run directory. resume=None resumes when last.pt exists.

    Raises TrainingStopped when a SIGTERM stopped the run (after writing a checkpoint to resume from)."""
    trainer = Trainer(cfg, resume=resume, progress=progress)
    try:
        trainer.run()
    finally:
        trainer.close()
    return trainer.run_dir


class Trainer:
    """One training run: model, optimizer, schedule, data, logs and checkpoints of this process."""

    def __init__(self, cfg: ExperimentConfig, *, resume: bool | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.started = time.monotonic()  # train.max_minutes counts from here
        self.dist = dist = distributed.setup(cfg.train.device, what="train.device")
        self.device = dist.device
        self.run_dir = Path(cfg.out_dir)
        self.lock = self.progress = self.log_file = None
        self.stop_signal: int | None = None  # set by a SIGTERM: stop at the next update boundary
        if dist.is_main:
            output_folder(self.run_dir, "out_dir")
            self.lock = FolderLock(self.run_dir, command_line())  # a second `asr train` here stops now
            # Holding the lock, no live write owns a temporary: any there are from a killed run.
            removed = remove_stale_temporaries(self.run_dir)
            if removed:
                log.warning("%s: removed %d temporary file(s) left by an interrupted checkpoint write: %s",
                            self.run_dir, len(removed), ", ".join(removed[:3]))
        try:
            self._build(resume, progress)
        except BaseException:
            self.close()
            raise

    def _build(self, resume: bool | None, progress: bool) -> None:
        """Vocabulary, model, optimizer and data; the newest checkpoint's state when resuming."""
        cfg, dist, device = self.cfg, self.dist, self.device
        _seed_everything(cfg.train.seed + dist.rank)

        self.tokenizer = load_tokenizer(cfg.data.vocab, cfg.data.train, cfg.text)
        if cfg.train.ctc_weight_start is not None and not (0.0 <= cfg.train.ctc_weight_start <= 1.0
                                                           and cfg.model.ctc_weight > 0):
            raise TrainingError("train.ctc_weight_start needs a value in [0, 1] and a model with a CTC head "
                                "(model.ctc_weight > 0)")
        self.model = build_model(cfg.frontend, cfg.model, self.tokenizer).to(device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.schedule = Schedule(self.optimizer, cfg.optim, total_steps=cfg.train.max_steps)
        self.amp_dtype = _amp_dtype(cfg.train.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.state = TrainState()

        # Resume: an explicit --resume insists on a checkpoint; by default one is used when present.
        found = None
        if resume is not False:
            candidates = _checkpoint_candidates(self.run_dir)
            found = load_first_good(candidates) if candidates else None
            if found is None and candidates:  # never overwrite checkpoints that merely failed to load
                raise TrainingError(
                    f"{self.run_dir}: none of its checkpoints loads ({', '.join(p.name for p in candidates)}; "
                    "reasons above); nothing was changed. Move them away, or pass --no-resume to start afresh "
                    "and overwrite them")
        if resume and found is None:
            raise TrainingError(f"{self.run_dir}: --resume given but no readable checkpoint there")
        if found is not None:
            path, ckpt = found
            log.info("resuming from %s (step %d)", path, ckpt["train_state"]["step"])
            self._resume(path, ckpt)
        elif cfg.train.init_from:
            init_weights(self.model, cfg.train.init_from, list(self.tokenizer.symbols))
        elif cfg.frontend.cmvn == "global":
            # Identical on every rank: the same first utterances, read in order, no rank split.
            compute_global_cmvn(self.model, cfg.data.train, limit=cfg.data.cmvn_utterances, device=device)
        self.saved_at = self.state.step if found is not None else -1  # step of the newest checkpoint
        if dist.is_main:  # only now: a refused resume leaves the run's config as it was
            try:
                save_config(cfg, self.run_dir / "config.yaml")
            except OSError as err:
                raise TrainingError(f"{self.run_dir / 'config.yaml'}: not written: {os_reason(err)}") from None
            if found is not None:
                _trim_log(self.run_dir / "train_log.jsonl", self.state.step)

        self.train_model: torch.nn.Module = self.model
        if dist.distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.loader = _make_train_loader(cfg, self.tokenizer, dist)
        self.dev_loader = _make_dev_loader(cfg, self.tokenizer) if cfg.data.dev and dist.is_main else None
        if dist.is_main:
            try:
                self.log_file = (self.run_dir / "train_log.jsonl").open("a", encoding="utf-8")
            except OSError as err:
                where = self.run_dir / "train_log.jsonl"
                raise TrainingError(f"{where}: cannot be written: {os_reason(err)}") from None
        self.progress = _progress(dist, self.state, cfg) if progress else None
        self.meter = _Throughput()
        if found is not None:
            # Last, after everything that draws from them was built. Only rank 0's streams are
            # saved (saving them all would need a collective while ranks may be at different
            # batches): the other ranks restart theirs from (seed, rank, step), so a resumed
            # multi-process run is equivalent but not bit-identical to an uninterrupted one.
            if dist.is_main:
                _restore_rng(ckpt["train_state"]["rng"])
            else:
                _seed_everything(cfg.train.seed + 1000003 * dist.rank + self.state.step)

    def _resume(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Load the run's checkpoint: TrainingError naming it when the config's vocabulary, model or
        optimizer is not the one it was trained with (the tensors would not fit, or fit wrongly)."""
        advice = "resume with the run's own settings, choose another out_dir, or pass --no-resume to start afresh"
        problem = vocab_difference(ckpt.get("vocab", []), list(self.tokenizer.symbols))
        if problem is not None:
            raise TrainingError(f"{path}: {problem}; {advice}")
        load_fitting(self.model, ckpt["model"], path,
                     hint=f"the config's model is not the one this run trains; {advice}")
        theirs = (ckpt.get("config") or {}).get("optim", {}).get("name", self.cfg.optim.name)
        if theirs != self.cfg.optim.name:
            raise TrainingError(f"{path}: trained with optim.name={theirs}, the config says {self.cfg.optim.name}; "
                                f"{advice}")
        saved = ckpt["train_state"]
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.schedule.load_state_dict(saved["schedule"])
            self.scaler.load_state_dict(saved["scaler"])
            self.state = _restore_state(saved)
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise TrainingError(f"{path}: its training state does not fit this run ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''}); {advice}") from None

    def run(self) -> None:
        """Epochs until train.epochs or train.max_steps, validating and checkpointing on the way.

        A SIGTERM (single process) stops at the next update boundary: a checkpoint is written and
        TrainingStopped raised, so the run resumes from that very step."""
        cfg, state = self.cfg, self.state
        first_step = state.step
        self.model.train()
        with self._stop_on_sigterm():
            while state.epoch < cfg.train.epochs and not self.finished:
                self.train_epoch()
                if self.finished:
                    break
                state.epoch += 1
                state.batch_in_epoch = 0
                if not cfg.train.validate_every:
                    self.validate_and_report()
        if self.stop_signal is not None:
            if self.saved_at != state.step:
                self.checkpoint()
            stopped = TrainingStopped(self.stop_signal, state.step, self.run_dir / "last.pt")
            log.warning("%s", stopped)
            raise stopped
        if self.saved_at != state.step:
            self.validate_and_report()
        if state.step == first_step and self.dist.is_main:
            log.warning("nothing was trained: %s", self._why_no_update())
        if self.dist.is_main and (self.loader.skipped or self.loader.dropped):
            log.warning("the last epoch %s", self.loader.skip_summary())

    def _why_no_update(self) -> str:
        """Why a run made no update: it resumed at its limits, or no batch came from the data."""
        train, step = self.cfg.train, self.state.step
        if step and train.max_steps and step >= train.max_steps:
            return f"the run resumed at step {step}, which reaches train.max_steps ({train.max_steps}); raise it"
        if step:
            return f"the run resumed at epoch {self.state.epoch}, which reaches train.epochs ({train.epochs}); raise it"
        return f"no batch came from data.train ({self.cfg.data.train})"

    @contextlib.contextmanager
    def _stop_on_sigterm(self) -> Iterator[None]:
        """While training, a SIGTERM sets `stop_signal` (a second one kills at once). Single-process
        runs only: under torchrun the ranks would notice it at different updates."""
        if self.dist.distributed or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.stop_signal is not None:  # asked twice: stop now, as without the handler
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            self.stop_signal = signum  # only a flag: logging from a handler may re-enter the log

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    @property
    def finished(self) -> bool:
        """True once train.max_steps updates are done, train.max_minutes of wall time have passed or a
        SIGTERM asked to stop."""
        train = self.cfg.train
        if self.stop_signal is not None:
            return True
        if train.max_steps and self.state.step >= train.max_steps:
            return True
        return bool(train.max_minutes) and time.monotonic() - self.started >= 60.0 * train.max_minutes

    def train_epoch(self) -> None:
        """The rest of the current epoch (all of it unless resuming), one update per accum_steps batches."""
        cfg, state, loader = self.cfg, self.state, self.loader
        accum = max(1, cfg.optim.accum_steps)
        loader.set_epoch(state.epoch)
        # Skips the batches trained on before a resume; each batch comes with its position in the
        # epoch (read as it arrives: _with_last looks one batch ahead).
        batches = ((b, loader.position) for b in loader.iter_from(state.batch_in_epoch))
        micro = 0
        with _join(self.train_model, self.dist):
            for (batch, position), is_last in _with_last(batches):
                state.batch_in_epoch = position
                micro += 1
                sync = micro % accum == 0 or is_last  # gradients are all-reduced on this batch only
                out = self.forward_backward(batch.to(self.device), accum, sync)
                if not sync:
                    continue
                micro = 0
                grad_norm = _update(self.model, self.optimizer, self.scaler, cfg, state)
                self.schedule.step()
                state.step += 1
                self.report_step(out, grad_norm)
                if cfg.train.validate_every and state.step % cfg.train.validate_every == 0:
                    self.validate_and_report()
                elif cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0:
                    self.checkpoint()
                if self.finished:
                    return

    def forward_backward(self, batch, accum: int, sync: bool) -> dict:
        """Loss of one batch and its (scaled, 1/accum) gradients, summed into .grad."""
        train = self.cfg.train
        if train.ctc_weight_start is not None:
            self.model.ctc_weight = ctc_weight_at(self.state.step, self.cfg.model.ctc_weight, train.ctc_weight_start,
                                                  train.ctc_weight_steps)
        with _no_sync(self.train_model, not sync):  # backward too: DDP all-reduces during it
            with torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp_dtype is not None):
                out = self.train_model(batch.waves, batch.wave_lengths, batch.targets, batch.target_lengths)
            self.scaler.scale(out["loss"] / accum).backward()
        self.meter.add(len(batch.ids), float(batch.wave_lengths.sum()) / self.cfg.frontend.features.sample_rate)
        return out

    def report_step(self, out: dict, grad_norm: float) -> None:
        """Progress bar every update; a JSON Lines record every train.log_every updates (rank 0)."""
        state = self.state
        if state.step % self.cfg.train.log_every == 0 or state.step == 1:
            record = {"kind": "train", "step": state.step, "epoch": state.epoch,
                      **{k: _item(v) for k, v in out.items() if k in LOGGED},
                      "grad_norm": grad_norm, "lr": self.schedule.lr, "ctc_weight": self.model.ctc_weight,
                      **self.meter.rates(),
                      "skipped_audio": self.loader.skipped, "dropped": self.loader.dropped,
                      "nonfinite": state.nonfinite_total}
            if self.dist.is_main:
                state.history.append(record)
                _write_log(self.log_file, record)
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(loss=f"{_item(out['loss']):.3f}", utt_s=f"{self.meter.last_rate:.1f}")

    def validate_and_report(self) -> None:
        """Dev loss, greedy CER/WER and plots on rank 0, then a checkpoint."""
        record = None
        if self.dev_loader is not None:
            state = self.state
            record = validate(self.model, self.dev_loader, self.tokenizer, self.cfg, self.device, self.amp_dtype,
                              self.run_dir)
            record.update(kind="valid", step=state.step, epoch=state.epoch)
            state.history.append(record)
            _write_log(self.log_file, record)
            self.schedule.observe(record["dev_loss"])
            plot_learning_curves(state.history, self.run_dir / "plots" / "learning_curve.png")
            log.info("step %d: dev loss %.4f, CER %.2f%%, WER %.2f%%", state.step,
                     record["dev_loss"], record["dev_cer"], record["dev_wer"])
        self.checkpoint(record[f"dev_{self.cfg.train.best_by}"] if record else None)

    def checkpoint(self, dev_score: float | None = None) -> None:
        """Rank 0 writes last.pt (the previous one kept as prev.pt) and, when among the best, best-stepN.pt."""
        self.saved_at = self.state.step
        if not self.dist.is_main:
            return
        is_best = dev_score is not None and _rank_best(self.run_dir, self.state, dev_score, self.cfg.train)
        payload = _payload(self.cfg, self.tokenizer, self.model, self.optimizer, self.schedule, self.scaler,
                           self.state)
        save_checkpoint(payload, self.run_dir / "last.pt", previous=self.run_dir / "prev.pt")
        if is_best:
            save_checkpoint(payload, self.run_dir / f"best-step{self.state.step}.pt")

    def close(self) -> None:
        """Close the progress bar and log, leave the process group, unlock the run folder."""
        if self.progress is not None:
            self.progress.close()
        if self.log_file is not None:
            self.log_file.close()
        distributed.teardown(self.dist)
        if self.lock is not None:
            self.lock.release()


LOGGED = ("loss", "att_loss", "ctc_loss", "accuracy")  # model outputs written to the training log


def ctc_weight_at(step: int, final: float, start: float, steps: int) -> float:
    """The CTC loss weight after `step` updates: linear from `start` to `final` over `steps` updates."""
    if step >= steps:
        return final
    return start + (final - start) * step / steps


@torch.no_grad()
def validate(model, loader, tokenizer, cfg: ExperimentConfig, device: torch.device,
             amp_dtype: torch.dtype | None, run_dir: Path | None = None) -> dict[str, Any]:
    """Dev loss (per utterance average) and greedy CER/WER; plots attention of a few utterances."""
    was_training = model.training
    model.eval()
    loss_sum, utts, refs, hyps = 0.0, 0, [], []
    longest = None  # (batch, enc, enc_lengths) of the batch with the longest audio, for the plot
    for batch in loader:
        batch = batch.to(device)
        with torch.autocast(device.type, amp_dtype, enabled=amp_dtype is not None):
            enc, enc_lengths = model.encode(batch.waves, batch.wave_lengths)
            out = model.loss(enc, enc_lengths, batch.targets, batch.target_lengths)
            tokens = greedy_search(model, enc, enc_lengths, max_len_ratio=cfg.train.decode_max_ratio)
        loss_sum += float(out["loss"]) * len(batch.ids)
        utts += len(batch.ids)
        refs += [tokenizer.normalize(t) for t in batch.texts]
        hyps += [tokenizer.decode(t) for t in tokens]
        if longest is None or batch.waves.shape[1] > longest[0].waves.shape[1]:
            longest = (batch, enc, enc_lengths)
    if run_dir is not None and longest is not None and cfg.train.plot_utterances > 0:
        _plot_alignments(model, *longest, tokenizer, cfg.train.plot_utterances, run_dir)
    model.train(was_training)
    scores = score_texts(refs, hyps)
    return {"dev_loss": loss_sum / max(utts, 1), "dev_cer": scores["cer"], "dev_wer": scores["wer"],
            "dev_utterances": utts, "examples": [[r, h] for r, h in list(zip(refs, hyps))[:3]]}


def _plot_alignments(model, batch, enc, enc_lengths, tokenizer, count: int, run_dir: Path) -> None:
    """Teacher-forced attention of the first `count` utterances of a dev batch, as a PNG."""
    n = min(count, len(batch.ids))
    tokens_in, _, _ = model.teacher_inputs(batch.targets[:n], batch.target_lengths[:n])
    _, weights = model.speller(enc[:n], enc_lengths[:n], tokens_in)
    panels = [weights[i, : int(batch.target_lengths[i]) + 1, : int(enc_lengths[i])].float().cpu().numpy()
              for i in range(n)]
    titles = [f"{batch.ids[i]}: {batch.texts[i]}" for i in range(n)]
    plot_attention(panels, titles, run_dir / "plots" / "attention.png")


class _Throughput:
    """Utterances and seconds of audio per wall-clock second since the last report."""

    def __init__(self) -> None:
        self.utts, self.seconds, self.start, self.last_rate = 0, 0.0, time.perf_counter(), 0.0

    def add(self, utts: int, seconds: float) -> None:
        self.utts += utts
        self.seconds += seconds

    def rates(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {"utt_per_s": self.utts / elapsed, "audio_s_per_s": self.seconds / elapsed}
        self.last_rate = out["utt_per_s"]
        self.utts, self.seconds, self.start = 0, 0.0, time.perf_counter()
        return out


def _update(model, optimizer, scaler, cfg: ExperimentConfig, state: TrainState) -> float:
    """Clip and apply the summed gradients; skip (and count) an update whose gradients are not finite."""
    scaler.unscale_(optimizer)
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
    if math.isfinite(grad_norm) or scaler.is_enabled():
        scaler.step(optimizer)  # the fp16 scaler skips non-finite steps itself and lowers its scale
        scaler.update()
        state.nonfinite_run = 0
    else:
        state.nonfinite_total += 1
        state.nonfinite_run += 1
        log.warning("step %d: non-finite gradient norm, update skipped (%d so far, %d in a row)",
                    state.step + 1, state.nonfinite_total, state.nonfinite_run)
        if state.nonfinite_run >= cfg.train.max_nonfinite:
            raise TrainingError(f"the loss was non-finite for {state.nonfinite_run} updates in a row "
                                f"(step {state.step + 1}); lower optim.lr or check the data")
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def _with_last(iterable) -> Iterator[tuple[Any, bool]]:
    """Yield (item, is_last) so the final batch of an epoch can close a gradient accumulation."""
    it = iter(iterable)
    try:
        current = next(it)
    except StopIteration:
        return
    for nxt in it:
        yield current, False
        current = nxt
    yield current, True


def _join(model, dist):
    """DDP's join: ranks that run out of batches first shadow the others' all-reduces."""
    return model.join() if dist.distributed else contextlib.nullcontext()


def _no_sync(model, skip: bool):
    return model.no_sync() if skip and isinstance(model, DistributedDataParallel) else contextlib.nullcontext()


def _make_train_loader(cfg: ExperimentConfig, tokenizer, dist):
    return make_loader(cfg.data.train, cfg.data.loader, tokenizer=tokenizer, rank=dist.rank,
                       world_size=dist.world_size, sample_rate=cfg.frontend.features.sample_rate)


def _make_dev_loader(cfg: ExperimentConfig, tokenizer):
    """The whole dev set, in order, on this process (no rank split, no duration filter)."""
    return make_loader(cfg.data.dev, cfg.data.loader, tokenizer=tokenizer, rank=0, world_size=1,
                       sample_rate=cfg.frontend.features.sample_rate, shuffle=False, max_duration=None,
                       min_duration=None, drop_last=False, speed_perturb=(), sorted_epochs=0)


def _progress(dist, state: TrainState, cfg: ExperimentConfig):
    if not dist.is_main:
        return None
    from tqdm import tqdm

    return tqdm(initial=state.step, total=cfg.train.max_steps or None, unit="step", dynamic_ncols=True,
                desc="train")


def _write_log(log_file, record: dict) -> None:
    """Append one JSON Lines record; TrainingError naming the log when the disk refuses it."""
    if log_file is not None:
        try:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        except OSError as err:
            raise TrainingError(f"{log_file.name}: not written: {os_reason(err)}") from None


def _trim_log(path: Path, step: int) -> None:
    """Drop the records of the training log after `step`, the step a run resumes from: a run killed
    after its last checkpoint logged steps that the resumed run logs again."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as err:
        raise TrainingError(f"{path}: unreadable training log ({err}); move it away to resume") from None
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) == len(lines):
        return
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        raise TrainingError(f"{path}: not rewritten: {os_reason(err)}") from None
    log.info("%s: dropped %d record(s) after step %d, logged after the checkpoint this run resumes from", path,
             len(lines) - len(kept), step)


def _logged_step(line: str) -> float:
    """The step of one log line; infinity for a line cut short by a kill (dropped with the later ones)."""
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return math.inf
    return step if isinstance(step, int) else math.inf


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of train.amp on `device`, or None, with a warning where it cannot apply."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        return None
    if device.type != "cuda":
        reason = f"mixed precision applies on CUDA only and this run is on {device.type}"
    elif dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        reason = f"{torch.cuda.get_device_name(device)} does not support bfloat16"
    else:
        return dtype
    log.warning("train.amp=%s has no effect: %s; training in float32", amp, reason)
    return None


def _item(value) -> float | None:
    if value is None:
        return None
    return float(value.detach()) if torch.is_tensor(value) else float(value)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _payload(cfg, tokenizer, model, optimizer, schedule, scaler, state: TrainState) -> dict[str, Any]:
    return {
        "config": to_dict(cfg),
        "vocab": list(tokenizer.symbols),
        "model": model.state_dict(),
        "train_state": {
            "step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
            "nonfinite_total": state.nonfinite_total, "nonfinite_run": state.nonfinite_run,
            "best": state.best, "best_by": state.best_by, "history": state.history,
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(), "rng": _rng_state(),
        },
    }


def _restore_state(saved: dict[str, Any]) -> TrainState:
    return TrainState(step=saved["step"], epoch=saved["epoch"], batch_in_epoch=saved["batch_in_epoch"],
                      nonfinite_total=saved["nonfinite_total"], nonfinite_run=saved["nonfinite_run"],
                      best=_plain_best(saved["best"]), best_by=saved.get("best_by", "loss"),
                      history=list(saved["history"]))


def _checkpoint_candidates(run_dir: Path) -> list[Path]:
    """Checkpoints a resume tries, in order: last.pt, prev.pt, then best-stepN.pt by step, newest first."""
    best = sorted((p for p in run_dir.glob("best-step*.pt") if best_step(p.name) is not None),
                  key=lambda p: best_step(p.name), reverse=True)
    return [p for p in [run_dir / "last.pt", run_dir / "prev.pt", *best] if p.is_file()]


def _plain_best(entries: list) -> list:
    """The [score, name] entries of a checkpoint's best list whose name is a best-stepN.pt of the run
    folder; any other name (a path, `../x`) is dropped, never opened or deleted."""
    kept = [[float(score), name] for score, name in entries if isinstance(name, str) and best_step(name) is not None]
    if len(kept) != len(entries):
        log.warning("ignoring %d entries of the checkpoint's best list that are not best-stepN.pt names",
                    len(entries) - len(kept))
    return kept


def _rank_best(run_dir: Path, state: TrainState, dev_score: float, cfg: TrainConfig) -> bool:
    """Enter this step in the best-`keep_best` list by its dev score (lower is better), delete files
    that fell out; True if kept. A run resumed with another best_by starts a new list (the files
    ranked by the old score stay on disk, unranked)."""
    keep = cfg.keep_best
    if keep <= 0:
        return False
    if state.best_by != cfg.best_by:
        if state.best:
            log.info("best checkpoints are ranked by dev %s from now on (were by dev %s)", cfg.best_by, state.best_by)
        state.best, state.best_by = [], cfg.best_by
    entry = [dev_score, f"best-step{state.step}.pt"]
    ranked = sorted(state.best + [entry], key=lambda b: b[0])
    for _, old in ranked[keep:]:
        (run_dir / old).unlink(missing_ok=True)
    state.best = ranked[:keep]
    return entry in state.best
