"""Evaluation on `val` inside the loop: when it is due, the trained weights and (with `run.ema`) their
moving average scored side by side, and which of the two best.pt and early stopping take.

The record logged to metrics.jsonl and log.csv holds the trained weights' metrics as the evaluator
returns them, the average's under `ema/` (`ema/miou`, `ema/val/iou`, ...) and `weights`, the better
of the two on `run.early_stop_metric` ("raw" or "ema"; a tie keeps "raw").
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from marsedge.errors import ConfigError
from marsedge.train.engine.ema import better
from marsedge.train.engine.precision import autocast_context
from marsedge.train.engine.state import Evaluator, LoopState, RunState


@dataclass
class Evaluation:
    """One evaluation: what is logged, the metrics of the better weights, which they are, its time."""

    record: dict
    chosen: dict
    weights: str  # "raw" or "ema"
    seconds: float


def due(state: LoopState, final: bool) -> bool:
    """Whether the epoch in progress ends with an evaluation (every run.eval_every epochs, and the last)."""
    every = state.cfg.run.eval_every
    return final or (every > 0 and (state.epoch + 1) % every == 0)


def _rank_zero_buffers(state: LoopState) -> None:
    """Every rank takes rank 0's buffers. DDP broadcasts them from rank 0 at the start of each
    forward, so after the last one each rank holds BatchNorm statistics of its own batches; the
    shards of val are then all scored with the model rank 0 saves (the next forward would
    broadcast the same values, so training is unchanged)."""
    if state.ctx.distributed:
        for buffer in state.model.buffers():
            dist.broadcast(buffer, src=0)


def _scores(evaluator: Evaluator, state: LoopState) -> dict:
    state.model.eval()
    with torch.no_grad(), autocast_context(state.cfg.run.amp, state.device):
        metrics = evaluator(state.model, state)
    state.model.train()
    return metrics


def _watched(metrics: dict, key: str) -> float:
    if key not in metrics:
        raise ConfigError(f"config key 'run.early_stop_metric': {key!r} is not among the evaluation "
                          f"results ({', '.join(k for k, v in metrics.items() if isinstance(v, float))})")
    return float(metrics[key])


def evaluate(run: RunState, evaluator: Evaluator) -> Evaluation:
    """Score the weights (and their average) on val on every rank; rank 0 logs the record."""
    state, cfg = run.state, run.state.cfg
    start = time.perf_counter()
    _rank_zero_buffers(state)
    metrics = _scores(evaluator, state)
    record, chosen, weights = dict(metrics), metrics, "raw"
    if run.ema is not None:
        run.ema.sync(state.ctx)
        with run.ema.swapped_in():
            averaged = _scores(evaluator, state)
        key = cfg.run.early_stop_metric
        if better(_watched(averaged, key), _watched(metrics, key), cfg.run.early_stop_mode):
            chosen, weights = averaged, "ema"
        record.update({f"ema/{k}": v for k, v in averaged.items()})
        record["weights"] = weights
    if run.logger is not None:
        run.logger.evaluation(state.epoch + 1, state.step, record)
    return Evaluation(record, chosen, weights, time.perf_counter() - start)


def is_best(run: RunState, evaluation: Evaluation, epoch: int) -> bool:
    """Record the better weights' value with early stopping; True when it is the best so far."""
    value = _watched(evaluation.chosen, run.state.cfg.run.early_stop_metric)
    improved = run.early.update(value, epoch)
    if improved and run.ema is not None:
        run.ema.best = evaluation.weights
    return improved
