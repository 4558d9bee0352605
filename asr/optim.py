"""Optimizers and learning-rate schedules named in the training config."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer, schedule and update rule."""

    name: Literal["adam", "adamw", "adadelta"] = "adam"
    lr: float = 1e-3  # peak learning rate (Adadelta: its own lr, usually 1.0)
    betas: tuple[float, float] = (0.9, 0.98)  # Adam/AdamW moments
    eps: float = 1e-8  # Adam eps; Adadelta uses max(eps, 1e-6)
    weight_decay: float = 0.0  # decoupled for AdamW, L2 for the others
    grad_clip: float = 5.0  # max global gradient norm (0 = no clipping)
    accum_steps: int = 1  # batches whose gradients are summed before one update
    schedule: Literal["constant", "warmup_decay", "plateau"] = "warmup_decay"
    warmup_steps: int = 500  # linear warm-up from 0 to lr (warmup_decay)
    decay: Literal["inverse_sqrt", "cosine", "none"] = "inverse_sqrt"  # after warm-up (warmup_decay)
    total_steps: int = 0  # length of the cosine decay (0 = from train.max_steps)
    min_lr_ratio: float = 0.01  # floor of the decay, as a fraction of lr
    plateau_factor: float = 0.5  # lr multiplier when dev loss stops improving (plateau)
    plateau_patience: int = 1  # validations without improvement before reducing (plateau)

    def __post_init__(self) -> None:
        # nan passes no comparison, so every range is written as the values it accepts.
        if not 0 < self.lr < math.inf:
            raise ValueError(f"optim.lr must be a positive finite number, got {self.lr}")
        if not all(0 <= b < 1 for b in self.betas) or not 0 < self.eps < math.inf:
            raise ValueError(f"optim.betas must be in [0, 1) and optim.eps positive, got {self.betas}, {self.eps}")
        if not 0 <= self.weight_decay < math.inf or not 0 <= self.grad_clip < math.inf:
            raise ValueError(f"optim.weight_decay and optim.grad_clip must be finite numbers >= 0, got "
                             f"{self.weight_decay}, {self.grad_clip}")
        if self.accum_steps < 1 or min(self.warmup_steps, self.total_steps, self.plateau_patience) < 0:
            raise ValueError("optim.accum_steps must be >= 1 and optim.warmup_steps, total_steps and plateau_patience "
                             f">= 0, got {self.accum_steps}, {self.warmup_steps}, {self.total_steps}, "
                             f"{self.plateau_patience}")
        if not 0 <= self.min_lr_ratio <= 1 or not 0 < self.plateau_factor <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1] and optim.plateau_factor in (0, 1], got "
                             f"{self.min_lr_ratio}, {self.plateau_factor}")


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` over `params`."""
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.Adadelta(params, lr=cfg.lr, eps=max(cfg.eps, 1e-6), weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: OptimConfig, total_steps: int = 0) -> float:
    """Multiplier of the peak lr after `step` updates (warmup_decay and constant schedules)."""
    if cfg.schedule != "warmup_decay":
        return 1.0
    warmup = max(cfg.warmup_steps, 0)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.decay == "inverse_sqrt":
        return max(cfg.min_lr_ratio, math.sqrt(max(warmup, 1) / (step + 1)))
    if cfg.decay == "cosine":
        total = cfg.total_steps or total_steps
        if total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


class Schedule:
    """Per-update lr factor (warm-up/decay) times a factor cut on dev-loss plateaus."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int = 0):
        self.optimizer, self.cfg, self.total_steps = optimizer, cfg, total_steps
        self.steps = 0
        self.plateau_scale = 1.0
        self.best = math.inf
        self.bad_validations = 0
        self._apply()

    def step(self) -> None:
        """Call after each optimizer update."""
        self.steps += 1
        self._apply()

    def observe(self, dev_loss: float) -> None:
        """Call after each validation; reduces the lr on plateaus when the schedule says so."""
        if dev_loss < self.best - 1e-4:
            self.best, self.bad_validations = dev_loss, 0
            return
        self.bad_validations += 1
        if self.cfg.schedule == "plateau" and self.bad_validations > self.cfg.plateau_patience:
            self.plateau_scale = max(self.plateau_scale * self.cfg.plateau_factor, self.cfg.min_lr_ratio)
            self.bad_validations = 0
            self._apply()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {
            "steps": self.steps,
            "plateau_scale": self.plateau_scale,
            "best": self.best,
            "bad_validations": self.bad_validations,
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.plateau_scale = float(state["plateau_scale"])
        self.best = float(state["best"])
        self.bad_validations = int(state["bad_validations"])
        self._apply()

    def _apply(self) -> None:
        lr = self.cfg.lr * lr_factor(self.steps, self.cfg, self.total_steps) * self.plateau_scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
