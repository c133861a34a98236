"""An exponential moving average (EMA) of the model's weights, evaluated beside the weights themselves.

With `run.ema: DECAY` the loop keeps, after every optimiser step,

    ema = d * ema + (1 - d) * weights,    d = min(DECAY, (1 + n) / (10 + n)),  n = updates so far

over the artefact module's parameters and floating buffers (BatchNorm statistics); integer buffers
are copied. The warm-up term keeps the first steps from being dominated by the initial weights (a
0.999 average of a 900-step run would otherwise still hold 40 % of the random init).

At each evaluation both weight sets are scored on `val` and best.pt takes whichever is better on
`run.early_stop_metric` (its `selected_on["weights"]` says "ema" or "raw"). last.pt holds the raw
weights (what training continues from) and this average in extra["train"]["ema"], so --resume is
exact and `marsedge export` of last.pt exports the average.

Under DDP every rank holds the same parameters, but each rank's BatchNorm statistics follow its own
batches; the average is made identical on every rank (rank 0's) before each use (`sync`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from marsedge.errors import ModelError
from marsedge.train.engine.distributed import DistContext

WEIGHTS = ("raw", "ema")  # what best.pt's weights can be: the trained ones or their average


class WeightEMA:
    """The running average of `module`'s state (the artefact module: what best.pt holds)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.module = module
        self.decay = float(decay)
        self.updates = 0
        self.best = "raw"  # which weights gave the best val result so far (best.pt's)
        self.average = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def rate(self) -> float:
        """The decay of the next update (the warm-up term, then DECAY)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the module's current weights in (after each optimiser step)."""
        live = self.module.state_dict()
        averaged, current = [], []
        for key, avg in self.average.items():
            value = live[key].detach()
            if avg.is_floating_point():
                averaged.append(avg)
                current.append(value.to(avg.dtype))
            else:
                avg.copy_(value)
        if averaged:
            torch._foreach_lerp_(averaged, current, 1.0 - self.rate())
        self.updates += 1

    @torch.no_grad()
    def sync(self, ctx: DistContext) -> None:
        """Every rank takes rank 0's average (BatchNorm statistics differ between ranks)."""
        if ctx.distributed:
            for value in self.average.values():
                dist.broadcast(value, src=0)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[dict[str, torch.Tensor]]:
        """The module holds the average inside the block and its own weights again after it (also on
        an exception); yields a copy of its own weights."""
        live = self.module.state_dict()
        own = {k: v.detach().clone() for k, v in live.items()}
        with torch.no_grad():
            for key, value in live.items():
                value.copy_(self.average[key])
        try:
            yield own
        finally:
            with torch.no_grad():
                for key, value in live.items():
                    value.copy_(own[key])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "best": self.best,
                "weights": {k: v.detach().cpu().clone() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict, source: str = "the checkpoint") -> None:
        weights = state["weights"]
        if weights.keys() != self.average.keys():
            raise ModelError(f"cannot resume {source}: its EMA weights do not match the model's tensors")
        with torch.no_grad():
            for key, value in self.average.items():
                value.copy_(weights[key])
        self.updates, self.best = int(state["updates"]), str(state["best"])


def better(value: float, other: float, mode: str) -> bool:
    """Whether `value` beats `other` for early_stop_mode `mode` (a tie keeps `other`)."""
    return value > other if mode == "max" else value < other
