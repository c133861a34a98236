"""The one training loop: finetune, pretrain, semisup, linear-eval and distill all run through `fit`.

A mode is an objective + data + an evaluator (on `val`) + a test evaluator. The loop owns
everything else: the runs folder, DDP, mixed precision, channels_last, gradient accumulation, the
optimiser and schedule, logging, atomic `last.pt`/`best.pt` (and `epoch_XXX.pt`:
marsedge.train.engine.history), exact resume (also after Ctrl-C: marsedge.train.engine.guard),
stopping on a non-finite loss, early stopping, an EMA of the weights (marsedge.train.engine.ema),
progress, TensorBoard and curves (marsedge.train.engine.watch), and the one scoring of the test
splits with the selected checkpoint (marsedge.train.engine.selection).

    ctx = init_distributed(cfg.run.device)              # before building loaders (rank, device)
    loader = build_train_loader(dataset, cfg, ctx)      # ResumableDistributedSampler inside
    result = fit(cfg, model, objective, loader, evaluator=evaluator, test_evaluator=tests, ctx=ctx,
                 resume=resume)                      # resume: True (run_dir/last.pt) or a checkpoint path

A training mode does not write these lines: it is a `Job` (marsedge.train.engine.job) and `run_job`
calls them for it. The types shared with checkpointing (`LoopState`, `Artifact`, ...) live in
marsedge.train.engine.state.

The objective is any callable

    objective(model, batch, state: LoopState) -> (loss: Tensor, logs: dict[str, float])

`model` is the trained model behind a thin dispatcher (and DDP when distributed): call `model(x)`
for logits or `model(x, method="forward_features")` for any other method of the module, never
`model.module`, so DDP sees every forward and synchronises gradients. `batch` is the loader's
dict with tensors already on `state.device`. The objective runs under autocast; the loop divides
the loss by `accumulate` and does the backward pass. An objective may also define any of

    on_epoch_start(epoch, state)   e.g. refresh pseudo-labels
    after_step(state)              after each optimiser step, e.g. an EMA teacher update
    on_epoch_end(epoch, state)

The evaluator is `evaluator(model, state) -> dict` called with the plain module in eval mode under
no_grad on every rank; it reduces over ranks itself and returns the same dict everywhere (scalars
are logged, `cfg.run.early_stop_metric` picks the key best.pt and early stopping watch). It must
read the `val` split only (one naming a test split is refused). An evaluator whose `selects` is
False only watches (pretraining's feature probe): its records are logged and shown, but best.pt is
the final weights and nothing stops early. `test_evaluator`, of the same
form, runs once after training on the weights of best.pt (on the artifact module); its result goes
to test_metrics.json and the summary's `test_metrics`.

`extra_state` maps names to objects with state_dict()/load_state_dict() (memory banks, pseudo-label
caches, an EMA teacher); they go into last.pt/best.pt and are restored on resume. `parameters`
(named) are the trainable ones (default: every parameter with requires_grad), so a frozen teacher
or backbone is simply left out. `artifact` says which module, model config and preprocessing make
the model part of the checkpoint (default: `model`, `cfg.model`, `cfg.data.preprocess`).
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from marsedge.errors import ConfigError
from marsedge.train.config import TrainConfig
from marsedge.train.engine import checkpointing, evaluation, history, precision, rundir, selection
from marsedge.train.engine.distributed import (
    DistContext,
    ResumableDistributedSampler,
    barrier,
    init_distributed,
)
from marsedge.train.engine.ema import WeightEMA
from marsedge.train.engine.guard import StepGuard, deferred_sigint
from marsedge.train.engine.optim import build_optimizer, build_scheduler
from marsedge.train.engine.precision import resolve_amp
from marsedge.train.engine.runlog import RunLogger
from marsedge.train.engine.state import (
    Artifact,
    EarlyStopping,
    Evaluator,
    LoopState,
    Objective,
    RunState,
    Stateful,
)
from marsedge.train.engine.summary import export_source
from marsedge.train.engine.tensorboard import check_available
from marsedge.train.engine.watch import Watch


class _Dispatch(nn.Module):
    """Lets objectives call any method of the model through DDP: `model(x, method="forward_features")`."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, method: str = "forward", **kwargs):
        return getattr(self.module, method)(*args, **kwargs)


def _seed_worker(worker_id: int) -> None:
    """numpy and random in each loader worker follow torch's per-worker seed (itself seeded)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_train_loader(dataset: Dataset, cfg: TrainConfig, ctx: DistContext, collate_fn=None) -> DataLoader:
    """The training DataLoader every mode uses: a resumable DistributedSampler (also alone, world
    size 1), drop_last, seeded workers. Per-sample randomness should come from the dataset's own
    (seed, epoch, index) RNG so results do not depend on the number of workers."""
    sampler = ResumableDistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=True)
    return DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
        collate_fn=collate_fn, drop_last=True, pin_memory=ctx.device.type == "cuda",
        worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(cfg.seed + ctx.rank),
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_context(cfg: TrainConfig, device: torch.device):
    return precision.autocast_context(cfg.run.amp, device)


def to_device(batch: Mapping, device: torch.device, channels_last: bool = False) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.ndim == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def _prepare_model(model: nn.Module, cfg: TrainConfig, ctx: DistContext, find_unused: bool) -> nn.Module:
    """Move, convert and wrap: the returned module is what objectives call."""
    if cfg.run.sync_bn and ctx.distributed:
        if ctx.device.type != "cuda":
            raise ConfigError("config key 'run.sync_bn' needs CUDA devices (SyncBatchNorm is GPU-only)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(ctx.device)
    if cfg.run.channels_last:
        model.to(memory_format=torch.channels_last)
    wrapped: nn.Module = _Dispatch(model)
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped = DistributedDataParallel(wrapped, device_ids=ids, find_unused_parameters=find_unused)
    return wrapped


def fit(
    cfg: TrainConfig,
    model: nn.Module,
    objective: Objective,
    train_loader: DataLoader,
    *,
    evaluator: Evaluator | None = None,
    test_evaluator: Evaluator | None = None,
    ctx: DistContext | None = None,
    run_dir: str | Path | None = None,
    parameters: Iterable[tuple[str, nn.Parameter]] | None = None,
    extra_state: dict[str, Stateful] | None = None,
    artifact: Artifact | None = None,
    resume: bool | str | Path = False,
    find_unused_parameters: bool = False,
) -> dict:
    """Train `model` with `objective` for cfg.epochs; returns a summary dict.

    Summary keys: epoch (epochs completed), step, best (metric, value, epoch), last_metrics (last val
    evaluation), selected_on, test_metrics (the test evaluator's result; {} without one or when
    interrupted), interrupted (Ctrl-C: last.pt written, resume with resume=True), stopped_early,
    run_dir, is_main, timing (this process's wall and training time, img/s: Watch.timing), export
    (the checkpoint `marsedge export` takes, None when the artefact is not a deployable model).
    Only rank 0 writes files; every rank returns the same summary. A non-finite loss raises
    ModelError (marsedge.train.engine.guard).
    """
    selection.check_selection(evaluator)
    if cfg.run.tensorboard:
        check_available()  # on every rank, before any work
    ctx = ctx or init_distributed(cfg.run.device)
    run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
    amp = resolve_amp(cfg.run.amp, ctx.device)  # fails here, before any work, for fp16 on a CPU
    if not isinstance(train_loader.sampler, ResumableDistributedSampler):
        raise TypeError("train_loader must come from build_train_loader (ResumableDistributedSampler)")
    seed_everything(cfg.seed + ctx.rank)

    named = list(parameters) if parameters is not None else list(model.named_parameters())
    wrapped = _prepare_model(model, cfg, ctx, find_unused_parameters)
    steps_per_epoch = len(train_loader.batch_sampler) // cfg.accumulate
    if steps_per_epoch == 0:
        raise ConfigError(
            f"config keys 'batch_size'/'accumulate': {len(train_loader.dataset)} training frames are fewer "
            f"than one optimiser step ({cfg.batch_size} x {cfg.accumulate} x {ctx.world_size} processes)"
        )
    optimizer = build_optimizer(named, cfg.optim)
    total_steps = steps_per_epoch * cfg.epochs
    state = LoopState(cfg=cfg, ctx=ctx, run_dir=run_dir, model=model, steps_per_epoch=steps_per_epoch,
                      total_steps=total_steps, optimizer=optimizer)
    run = RunState(
        state=state, wrapped=wrapped, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.optim, total_steps, steps_per_epoch),
        scaler=torch.amp.GradScaler(ctx.device.type, enabled=amp == "fp16"),
        early=EarlyStopping(cfg.run.early_stop_mode, cfg.run.early_stop_patience),
        artifact=artifact or Artifact(model, cfg.model, cfg.data.preprocess),
        extra_state=dict(extra_state or {}),
    )
    checkpoint = (run_dir / "last.pt" if resume is True else Path(resume)) if resume else None
    changes = {}
    if cfg.run.ema is not None:  # after _prepare_model: the average lives on the training device
        run.ema = WeightEMA(run.artifact.module, cfg.run.ema)
    if checkpoint is not None:
        changes = rundir.config_changes(cfg, checkpoint)  # the resume contract, before any weight moves
        checkpointing.restore(run, checkpoint)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.record_config(run_dir, cfg, state.step, checkpoint, changes)
        run.logger = RunLogger(run_dir, resume_step=state.step if resume else None)
    run.watch = Watch(run, evaluates=evaluator is not None, resumed=bool(resume))
    try:
        summary = _train(run, objective, train_loader, evaluator, test_evaluator)
    finally:
        run.watch.close()
    return {**summary, "timing": run.watch.timing(state.step), "export": export_source(run)}


def _train(run: RunState, objective: Objective, loader: DataLoader, evaluator: Evaluator | None,
           test_evaluator: Evaluator | None) -> dict:
    state, cfg = run.state, run.state.cfg
    summary = {"interrupted": False, "stopped_early": False, "last_metrics": {}, "test_metrics": {}}
    selects = evaluator is not None and getattr(evaluator, "selects", True)
    guard = StepGuard(run)
    try:
        while state.epoch < cfg.epochs and not _step_limit_reached(state):
            epoch_number = state.epoch + 1  # 1-based in logs and summaries
            finished = _train_epoch(run, objective, loader, guard)
            final = not finished or epoch_number >= cfg.epochs
            due = evaluator is not None and evaluation.due(state, final)
            result = evaluation.evaluate(run, evaluator) if due else None
            if finished:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            improved = selects and result is not None and evaluation.is_best(run, result, epoch_number)
            if result is not None:
                summary["last_metrics"] = result.record
            _save(run, "last.pt")  # after the early-stopping update, so a resume carries it
            if finished and state.ctx.is_main:
                history.keep_epoch(state.run_dir, state.epoch, cfg.run.keep_checkpoints)
            if improved:
                _save(run, "best.pt", extra={"selected_on": selection.selected_on(run, True)},
                      weights=result.weights)
            if result is not None:
                written = improved if selects else None
                run.watch.evaluation(run, evaluator, result, epoch_number, written=written)
            if run.early.should_stop:
                summary["stopped_early"] = True
                break
        if not selects:  # nothing to select on: the final weights are the result
            _save(run, "best.pt", extra={"selected_on": selection.selected_on(run, False)})
        if test_evaluator is not None:
            summary["test_metrics"] = _score_tests(run, test_evaluator, selects)
    except KeyboardInterrupt:
        # Back to the last completed optimiser step: the partial window's forwards are undone
        # (BatchNorm statistics, extra state, RNG) and its micro-batches are replayed on resume.
        guard.rollback()
        state.batch_in_epoch -= state.batch_in_epoch % cfg.accumulate
        _save(run, "last.pt", gather=False)
        summary["interrupted"] = True
    best = {"metric": cfg.run.early_stop_metric, "value": run.early.best, "epoch": run.early.best_epoch}
    summary.update(epoch=state.epoch, step=state.step, best=best, run_dir=str(state.run_dir),
                   is_main=state.ctx.is_main, selected_on=selection.selected_on(run, selects))
    return summary


def _score_tests(run: RunState, test_evaluator: Evaluator, selects: bool) -> dict:
    """The test splits, once, on best.pt's weights (loaded into the artifact module on every rank)."""
    from marsedge.models.checkpoints import load_checkpoint

    state = run.state
    barrier(state.ctx)  # rank 0 has written best.pt
    best = state.run_dir / "best.pt"
    module = run.artifact.module
    module.load_state_dict(load_checkpoint(best).state_dict)
    module.eval()
    with torch.no_grad(), autocast_context(state.cfg, state.device):
        metrics = test_evaluator(module, state)
    if state.ctx.is_main:
        selection.write_test_metrics(state.run_dir, best, selection.selected_on(run, selects), metrics)
        if run.logger is not None:
            run.logger.test(state.epoch, state.step, metrics)
    return metrics


def _step_limit_reached(state: LoopState) -> bool:
    return state.cfg.run.max_steps is not None and state.step >= state.cfg.run.max_steps


def _call_hook(objective: Objective, name: str, *args) -> None:
    hook = getattr(objective, name, None)
    if callable(hook):
        hook(*args)


def _train_epoch(run: RunState, objective: Objective, loader: DataLoader, guard: StepGuard) -> bool:
    """One (possibly resumed) epoch; False when the step limit cut it short."""
    state, cfg, ctx = run.state, run.state.cfg, run.state.ctx
    loader.sampler.set_epoch(state.epoch)
    loader.sampler.set_start(state.batch_in_epoch * cfg.batch_size)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(state.epoch)
    _call_hook(objective, "on_epoch_start", state.epoch, state)
    state.model.train()
    micro_total = state.steps_per_epoch * cfg.accumulate  # leftover micro-batches are dropped
    batches = itertools.islice(loader, micro_total - state.batch_in_epoch)
    window: dict[str, list[float]] = {}
    for batch in run.watch.batches(batches, micro_total, state):
        micro = state.batch_in_epoch % cfg.accumulate
        last_micro = micro == cfg.accumulate - 1
        if micro == 0:
            guard.begin()
        batch = to_device(batch, ctx.device, cfg.run.channels_last)
        sync = contextlib.nullcontext() if last_micro or not ctx.distributed else run.wrapped.no_sync()
        with sync:
            with autocast_context(cfg, ctx.device):
                loss, logs = objective(run.wrapped, batch, state)
            run.scaler.scale(loss / cfg.accumulate).backward()
        for k, v in {"loss": loss.detach(), **logs}.items():
            window.setdefault(k, []).append(float(v))
        guard.check_loss(window["loss"][-1])
        state.batch_in_epoch += 1
        if last_micro:
            with deferred_sigint():  # a Ctrl-C here is raised once the step is whole
                _optimizer_step(run, guard)
                if run.ema is not None:
                    run.ema.update()
                _call_hook(objective, "after_step", state)
                guard.complete()
            if state.step % cfg.run.log_every == 0:
                run.watch.train_window(run, window)
                window = {}
            if cfg.run.checkpoint_every and state.step % cfg.run.checkpoint_every == 0:
                _save(run, "last.pt")
            if _step_limit_reached(state):
                return state.batch_in_epoch >= micro_total
    _call_hook(objective, "on_epoch_end", state.epoch, state)
    return True


def _optimizer_step(run: RunState, guard: StepGuard) -> None:
    """Clip, check (a non-finite loss or gradient stops the run before the update), step."""
    clip = run.state.cfg.optim.clip_grad_norm
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
    norm = None
    if clip:
        run.scaler.unscale_(run.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    elif not run.scaler.is_enabled():
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else None
    # with a GradScaler, inf gradients are an overflow the scaler skips, not a divergence
    guard.check_step(None if run.scaler.is_enabled() else norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.state.step += 1


def _save(run: RunState, name: str, gather: bool = True, extra: dict | None = None,
          weights: str = "raw") -> None:
    checkpointing.save(run, run.state.run_dir / name, gather=gather, extra=extra, weights=weights)
