"""The state of a run in progress: what objectives, hooks and evaluators read (`LoopState`), what the
checkpoint's model part is (`Artifact`), early stopping, and the mutable pieces of one `fit` call
(`RunState`), which `loop` drives and `checkpointing` saves and restores. Both import this module and
not each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from marsedge.train.config import TrainConfig
from marsedge.train.engine.distributed import DistContext
from marsedge.train.engine.ema import WeightEMA
from marsedge.train.engine.runlog import RunLogger


@dataclass
class LoopState:
    """What an objective, a hook or an evaluator may read about the run in progress."""

    cfg: TrainConfig
    ctx: DistContext
    run_dir: Path
    model: nn.Module  # the plain module (not the DDP wrapper)
    epoch: int = 0
    step: int = 0  # optimiser steps taken so far
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    steps_per_epoch: int = 0
    total_steps: int = 0
    optimizer: torch.optim.Optimizer | None = None

    @property
    def device(self) -> torch.device:
        return self.ctx.device


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: dict, state: LoopState) -> tuple[torch.Tensor, dict]: ...


class Evaluator(Protocol):
    def __call__(self, model: nn.Module, state: LoopState) -> dict: ...


class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> Any: ...


@dataclass
class Artifact:
    """The model part of a checkpoint: the module whose weights later steps load, and its description."""

    module: nn.Module
    model_config: Any  # ModelConfig or its dict
    preprocess: Any  # PreprocessSpec or its dict
    classes: list[dict] | None = None  # the class table; None: the terrain classes


@dataclass
class EarlyStopping:
    """Counts evaluations without improvement of one metric."""

    mode: str = "max"
    patience: int = 0
    best: float | None = None
    best_epoch: int = -1
    bad_evals: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record a value; True when it is the best so far."""
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.best_epoch, self.bad_evals = float(value), epoch, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_evals = state["best"], state["best_epoch"], state["bad_evals"]


@dataclass
class RunState:
    """The mutable pieces of one fit() call, grouped so that checkpointing sees them together."""

    state: LoopState
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    early: EarlyStopping
    artifact: Artifact
    extra_state: dict[str, Stateful] = field(default_factory=dict)
    logger: RunLogger | None = None
    ema: WeightEMA | None = None  # run.ema: the moving average of the artefact's weights
    watch: Any = None  # marsedge.train.engine.watch.Watch: progress, TensorBoard, curves, timing
