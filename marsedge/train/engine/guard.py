"""What keeps a run's checkpoints true to a completed optimiser step.

- Ctrl-C. A forward pass changes state outside the optimiser: BatchNorm running statistics, a
  recall loss's running counts, a memory bank's queue, the RNG (dropout). An interrupt part-way
  through an accumulation window would save that half-done state and the resumed run would replay
  the window on top of it, so `StepGuard` snapshots it when a window starts and `rollback` puts it
  back before last.pt is written: Ctrl-C then --resume equals the uninterrupted run bit for bit.
  The optimiser step itself runs with SIGINT deferred (`deferred_sigint`): a Ctrl-C arriving
  there is raised once the step is whole.
- Divergence. A non-finite loss (or gradient, without a GradScaler that skips such steps) stops
  the run with one line (a ModelError) before the optimiser step, so nothing non-finite reaches
  the weights, metrics.jsonl, last.pt or best.pt: the last good checkpoint stays as it was. Under
  DDP the ranks agree through one all-reduce of a flag per step, so they all stop together.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import threading

import torch

from marsedge.errors import ModelError
from marsedge.train.engine.checkpointing import rng_state, set_rng_state
from marsedge.train.engine.distributed import all_reduce_sum
from marsedge.train.engine.state import RunState


@contextlib.contextmanager
def deferred_sigint():
    """Hold a SIGINT that arrives inside the block and deliver it when the block ends (main thread
    only: elsewhere Python delivers no signals anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt here
        elif received and previous == signal.SIG_DFL:
            raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_sigint():
    """A SIGTERM (`kill`, a job scheduler, a container stop) stops a run the way Ctrl-C does:
    last.pt written at the last whole step and a line saying how to resume (main thread only).
    Not under torchrun: its agent stops the other ranks with SIGTERM when one fails, and a rank
    waiting in a collective would only see the interrupt when the collective times out."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed or threading.current_thread() is not threading.main_thread():
        yield
        return

    def as_sigint(signum, frame) -> None:
        handler = signal.getsignal(signal.SIGINT)  # deferred_sigint's while an optimiser step runs
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, as_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StepGuard:
    """Snapshot at each accumulation window's start, rollback on Ctrl-C, stop on non-finite values."""

    def __init__(self, run: RunState) -> None:
        self.run = run
        self.snapshot: dict | None = None
        self.bad: tuple[str, float] | None = None  # the first non-finite value of this window

    @property
    def in_step(self) -> bool:
        """True between a window's first forward and its completed optimiser step."""
        return self.snapshot is not None

    def begin(self) -> None:
        """Before the window's first forward: what forwards mutate outside the optimiser."""
        run = self.run
        self.snapshot = {
            "buffers": [b.detach().clone() for b in run.state.model.buffers()],
            "extra_state": {name: copy.deepcopy(obj.state_dict()) for name, obj in run.extra_state.items()},
            "rng": rng_state(),
        }
        self.bad = None

    def complete(self) -> None:
        self.snapshot = None

    def rollback(self) -> None:
        """Undo a partial window: buffers, extra state and RNG as they were when it began."""
        if self.snapshot is None:
            return
        run, snap = self.run, self.snapshot
        with torch.no_grad():
            for buffer, saved in zip(run.state.model.buffers(), snap["buffers"], strict=True):
                buffer.copy_(saved)
        for name, obj in run.extra_state.items():
            obj.load_state_dict(snap["extra_state"][name])
        set_rng_state(snap["rng"])
        self.snapshot = None

    def check_loss(self, value: float) -> None:
        if not math.isfinite(value) and self.bad is None:
            self.bad = ("the loss", value)

    def check_step(self, grad_norm: torch.Tensor | None) -> None:
        """Before the optimiser step: stop every rank if any saw a non-finite loss or gradient."""
        if grad_norm is not None and self.bad is None and not bool(torch.isfinite(grad_norm)):
            self.bad = ("the gradient norm", float(grad_norm))
        state = self.run.state
        if state.ctx.distributed:
            flag = torch.tensor([0.0 if self.bad is None else 1.0], device=state.device)
            if float(all_reduce_sum(flag, state.ctx)) > 0 and self.bad is None:
                self.bad = ("another rank's loss or gradient", math.nan)
        if self.bad is None:
            return
        what, value = self.bad
        last = state.run_dir / "last.pt"
        kept = f"{last} (the last good checkpoint) is kept" if last.is_file() else "no checkpoint was written"
        raise ModelError(f"{state.run_dir}: training diverged at step {state.step + 1} (epoch "
                         f"{state.epoch + 1}): {what} is {value}; stopped before the update, {kept} "
                         "(lower optim.lr or set optim.clip_grad_norm)")
