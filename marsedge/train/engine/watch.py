"""Watching a run while it trains: the loop tells a `Watch` about batches, log windows and
evaluations, and it keeps the time (training, loader waits, evaluations) and shows the run:
progress (marsedge.train.engine.progress), TensorBoard (marsedge.train.engine.tensorboard) and
runs/<name>/curves.png (marsedge.train.engine.curves). Every rank has one (the window means are
averaged over ranks); only rank 0's prints and writes. metrics.jsonl and log.csv (RunLogger) stay
the record of the run: everything here is a view of it, plus the timing of the run summary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from marsedge.train.engine import progress
from marsedge.train.engine.curves import plot_curves
from marsedge.train.engine.distributed import mean_over_ranks
from marsedge.train.engine.evaluation import Evaluation
from marsedge.train.engine.state import Evaluator, LoopState, RunState
from marsedge.train.engine.tensorboard import TensorBoardLog, overlays

TENSORBOARD = "tensorboard"  # runs/<name>/tensorboard/


class Watch:
    def __init__(self, run: RunState, evaluates: bool, resumed: bool) -> None:
        state, cfg = run.state, run.state.cfg
        self.name = cfg.name
        self.main = state.ctx.is_main
        self.show = self.main and cfg.run.progress
        self.terminal = self.show and progress.is_terminal()
        self.images_per_step = cfg.batch_size * cfg.accumulate * state.ctx.world_size
        limit = cfg.run.max_steps if cfg.run.max_steps is not None else state.total_steps
        self.total = min(state.total_steps, limit)
        self.evaluates = evaluates
        self.cuda = state.device if state.device.type == "cuda" else None
        self.started = time.perf_counter()
        self.first_step = state.step
        self.train_s = 0.0  # inside training batches, loader waits included (this process)
        self.wait_s = 0.0  # waiting for the loader
        self.logging_s = 0.0  # progress output and TensorBoard of the train windows
        self.views_s = 0.0  # evaluation lines, TensorBoard images and curves.png
        self.eval_s: list[float] = []
        self.window = (0.0, 0.0, state.step)  # train_s, wait_s and step when the log window began
        self.current: float | None = None  # when the batch in hand was asked for
        self.bar = None
        self.tb = None
        if self.main and cfg.run.tensorboard:
            folder = state.run_dir / TENSORBOARD
            if not resumed:  # a fresh run starts fresh event files, as it starts a fresh metrics.jsonl
                for old in folder.glob("events.out.tfevents.*"):
                    old.unlink()
            self.tb = TensorBoardLog(folder, purge_step=state.step + 1 if resumed else None)

    # ---- training batches -------------------------------------------------------------------------

    def batches(self, batches: Iterable, micro_total: int, state: LoopState) -> Iterator:
        """The epoch's micro-batches, timed (and a bar on a terminal)."""
        if self.terminal:
            self.bar = progress.bar(micro_total, state.batch_in_epoch,
                                    f"epoch {state.epoch + 1}/{state.cfg.epochs}")
        source = iter(batches)
        try:
            while True:
                asked = time.perf_counter()
                try:
                    batch = next(source)
                except StopIteration:
                    return
                self.wait_s += time.perf_counter() - asked
                self.current = asked
                yield batch
                self.train_s += time.perf_counter() - asked
                self.current = None
                if self.bar is not None:
                    self.bar.update(1)
        finally:
            self.current = None
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def _train_now(self) -> float:
        return self.train_s + (time.perf_counter() - self.current if self.current is not None else 0.0)

    def eta(self, state: LoopState) -> float | None:
        """Seconds until the run ends: the remaining steps at this process's pace so far, and the
        remaining evaluations at their mean duration."""
        done = state.step - self.first_step
        if done <= 0:
            return None
        left = max(0, self.total - state.step) * self._train_now() / done
        if self.evaluates and self.eval_s:
            cfg = state.cfg
            last = min(cfg.epochs, math.ceil(self.total / max(1, state.steps_per_epoch)))
            due = [e for e in range(state.epoch, last)
                   if e == last - 1 or (cfg.run.eval_every > 0 and (e + 1) % cfg.run.eval_every == 0)]
            left += len(due) * float(np.mean(self.eval_s))
        return left

    # ---- log windows and evaluations ----------------------------------------------------------------

    def train_window(self, run: RunState, window: dict[str, list[float]]) -> None:
        """Every run.log_every steps on every rank: the window's means over ranks to metrics.jsonl,
        then (rank 0) the progress line or bar and TensorBoard."""
        state = run.state
        means = mean_over_ranks({k: float(np.mean(v)) for k, v in window.items()}, state.ctx)
        lr = float(run.optimizer.param_groups[0]["lr"])
        if run.logger is not None:
            run.logger.train(state.epoch + 1, state.step, {**means, "lr": lr})
        if not self.main:
            return
        start = time.perf_counter()
        train_then, wait_then, step_then = self.window
        now = self._train_now()
        seconds = now - train_then
        rate = (state.step - step_then) * self.images_per_step / seconds if seconds > 0 else 0.0
        share = (self.wait_s - wait_then) / seconds if seconds > 0 else 0.0
        self.window = (now, self.wait_s, state.step)
        if self.tb is not None:
            self.tb.train(state.step, {**means, "lr": lr, "images_per_s": rate, "data_wait_share": share})
        if self.show:
            eta = self.eta(state)
            if self.bar is not None:
                self.bar.set_postfix_str(f"loss {means.get('loss', math.nan):.4f} lr {lr:.2e} "
                                         f"run ETA {progress.duration(eta)}")
            else:
                peak = torch.cuda.max_memory_allocated(self.cuda) / 2**30 if self.cuda is not None else None
                progress.say(progress.train_line(self.name, state.step, self.total, state.epoch + 1,
                                                 state.cfg.epochs, means, lr, rate, share, eta, peak), False)
        self.logging_s += time.perf_counter() - start

    def evaluation(self, run: RunState, evaluator: Evaluator, result: Evaluation, epoch: int,
                   written: bool | None) -> None:
        """After an evaluation and its checkpoints: the evaluation line, TensorBoard, curves.png."""
        self.eval_s.append(result.seconds)
        if not self.main:
            return
        start = time.perf_counter()
        state, cfg = run.state, run.state.cfg
        if self.show:
            best = (run.early.best, run.early.best_epoch, run.ema.best if run.ema is not None else None)
            line = progress.eval_line(self.name, epoch, cfg.epochs, state.step, cfg.run.early_stop_metric,
                                      result.record, result.weights, best, written)
            progress.say(line, self.bar is not None)
        if self.tb is not None:
            panels = self._overlays(run, evaluator, result.weights)
            self.tb.evaluation(state.step, result.record, result.weights, panels)
        if cfg.run.curves:
            plot_curves(Path(state.run_dir), cfg.run.early_stop_metric)
        self.views_s += time.perf_counter() - start

    def _overlays(self, run: RunState, evaluator: Evaluator, weights: str) -> list[np.ndarray]:
        state = run.state
        if weights == "ema" and run.ema is not None:
            with run.ema.swapped_in():
                return overlays(evaluator, state.model, state.device, run.artifact.classes)
        return overlays(evaluator, state.model, state.device, run.artifact.classes)

    # ---- the end ------------------------------------------------------------------------------------

    def timing(self, step: int) -> dict:
        """This process's time: wall, training (loader waits included), evaluations, throughput, and
        what watching cost: `logging_share` of the training time (train windows: progress and
        TensorBoard scalars), `views_time_s` after the evaluations (their lines, images, curves)."""
        images = (step - self.first_step) * self.images_per_step
        train = self.train_s
        return {"wall_time_s": round(time.perf_counter() - self.started, 3), "train_time_s": round(train, 3),
                "eval_time_s": round(float(sum(self.eval_s)), 3), "images": images,
                "images_per_s": round(images / train, 3) if train > 0 else None,
                "data_wait_share": round(self.wait_s / train, 4) if train > 0 else None,
                "logging_share": round(self.logging_s / train, 5) if train > 0 else None,
                "views_time_s": round(self.views_s, 3)}

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
