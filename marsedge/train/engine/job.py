"""A training mode is a `Job` registered by name; `run_job` owns the lifecycle every mode shares.

    @register_mode("finetune", TrainConfig)         # the mode's name and config class
    class Finetune(Job):
        def prepare(self) -> None: ...              # data, val/test evaluators, frozen models (pre-seed)
        def build(self) -> FitPlan: ...             # the trained model, objective, losses (after it)
        def banner(self) -> str | None: ...         # one line printed on rank 0 before training
        def finish(self, summary) -> dict: ...      # after fit: extra files, extra summary keys

`run_job(cfg, resume, job_class)` joins the process group torchrun describes (or runs alone), calls
`prepare`, seeds torch with `cfg.seed` (the same initial weights on every rank and every run: only
the trained model's construction may consume that seed, so `prepare` runs before it), calls `build`,
prints the banner, builds the training loader and runs `marsedge.train.engine.loop.fit`, calls
`finish` on the summary, writes runs/<name>/summary.json (marsedge.train.engine.summary; rank 0,
also under the result's "run_summary"), and always leaves the process group. A mode module defines one Job and
nothing of this; `marsedge.train.modes` imports every mode so that `MODES` is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from marsedge.train.config import TrainConfig
from marsedge.train.engine.distributed import DistContext, barrier, init_distributed, shutdown_distributed
from marsedge.train.engine.loop import build_train_loader, fit
from marsedge.train.engine.rundir import claim_run_dir, release_run_dir
from marsedge.train.engine.state import Artifact, Evaluator, Objective, Stateful
from marsedge.train.engine.summary import write_summary


@dataclass
class FitPlan:
    """What `Job.build` hands to the loop (see `fit` for each argument)."""

    model: nn.Module
    objective: Objective
    train_set: Dataset  # run_job wraps it in build_train_loader
    evaluator: Evaluator | None = None  # on `val`: what best.pt and early stopping are chosen on
    test_evaluator: Evaluator | None = None  # the test splits: scored once, on best.pt, after training
    extra_state: dict[str, Stateful] = field(default_factory=dict)
    artifact: Artifact | None = None  # None: the model itself, cfg.model, cfg.data.preprocess
    find_unused_parameters: bool = False


class Job:
    """One run of a mode on this process. Subclasses set what they build as attributes in
    `prepare` and return a FitPlan from `build`; `banner` and `finish` are optional."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx

    def prepare(self) -> None:
        """Data, loaders' datasets, the evaluator and anything frozen (a teacher): before the seed."""

    def build(self) -> FitPlan:
        """The trained model, its objective and losses, built right after torch.manual_seed(cfg.seed)."""
        raise NotImplementedError

    def banner(self) -> str | None:
        """One line about the run, printed by rank 0 as `[name] line` before training (None: nothing)."""
        return None

    def finish(self, summary: dict) -> dict:
        """After fit on every rank: write what the mode adds to the run, add summary keys."""
        return summary


@dataclass(frozen=True)
class Mode:
    """A registered training mode: its config class (read from YAML) and its Job."""

    name: str
    config: type[TrainConfig]
    job: type[Job]

    def run(self, cfg: TrainConfig, resume: bool | str | Path = False, overwrite: bool = False) -> dict:
        """Train as configured; the loop's summary (see marsedge.train.engine.loop.fit). `resume`:
        True continues runs/<name>/last.pt, a path continues that checkpoint. `overwrite` replaces
        an earlier run in runs/<name>/ (marsedge.train.engine.rundir)."""
        return run_job(cfg, resume, self.job, overwrite)


# mode name -> Mode; filled by @register_mode when marsedge.train.modes is imported
MODES: dict[str, Mode] = {}


def register_mode(name: str, config: type[TrainConfig] = TrainConfig):
    """Class decorator: `@register_mode("pretrain", PretrainConfig)` on a Job subclass."""

    def decorate(job: type[Job]) -> type[Job]:
        if name in MODES and MODES[name].job is not job:
            raise ValueError(f"training mode {name!r} registered twice ({MODES[name].job.__module__}, "
                             f"{job.__module__})")
        MODES[name] = Mode(name, config, job)
        return job

    return decorate


def run_job(cfg: TrainConfig, resume: bool | str | Path, job_class: type[Job],
            overwrite: bool = False) -> dict[str, Any]:
    """The lifecycle of one run: distributed init, the run folder claimed (locked, an earlier run
    refused unless resumed or overwritten), prepare, seed, build, banner, fit, finish, shutdown."""
    ctx = init_distributed(cfg.run.device)
    lock, created = None, not Path(cfg.run_dir).exists()
    try:
        lock = claim_run_dir(cfg.run_dir, resume, overwrite, ctx, command=cfg.mode)
        job = job_class(cfg, ctx)
        job.prepare()
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
        plan = job.build()
        line = job.banner()
        if ctx.is_main and line is not None:
            print(f"[{cfg.name}] {line}")
        summary = fit(cfg, plan.model, plan.objective, build_train_loader(plan.train_set, cfg, ctx),
                      evaluator=plan.evaluator, test_evaluator=plan.test_evaluator, ctx=ctx,
                      extra_state=plan.extra_state,
                      artifact=plan.artifact, resume=resume,
                      find_unused_parameters=plan.find_unused_parameters)
        result = job.finish(summary)
        if ctx.is_main:
            result["run_summary"] = write_summary(cfg, result, ctx.world_size, str(ctx.device))
        # Every rank done (rank 0 finishes last: it writes the reports) before any leaves the group.
        # Only on success: after an exception the other ranks may never arrive, and a run never hangs.
        barrier(ctx)
        return result
    finally:
        release_run_dir(lock, Path(cfg.run_dir), created)
        shutdown_distributed()
