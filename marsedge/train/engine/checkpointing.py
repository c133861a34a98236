"""last.pt / best.pt: the model artefact (marsedge.models.checkpoints) plus everything an exact
resume needs, all as tensors and plain types so `torch.load(weights_only=True)` reads it.

    extra["train"] = {epoch, step, batch_in_epoch, optimizer, scheduler, scaler, early_stopping,
                      rng: [per-rank {torch, cuda, numpy, python}], extra_state: {name: state},
                      ema (with run.ema: the moving average, marsedge.train.engine.ema),
                      model (the trained model's own weights when the artefact part is not them:
                             another module, or best.pt holding the moving average)}
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np
import torch

from marsedge.errors import ModelError
from marsedge.train.engine.distributed import gather_objects
from marsedge.train.engine.state import RunState


def rng_state() -> dict:
    """This process's RNG states as tensors and plain types (no numpy objects, no pickle needed)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_state(run: RunState, gather: bool = True) -> dict:
    """Everything beyond the model weights. `gather=False` (Ctrl-C, where other ranks may be gone)
    stores only this rank's RNG; a resume then gives it to every rank."""
    s = run.state
    rngs = gather_objects(rng_state(), s.ctx) if gather else [rng_state()]
    out = {
        "epoch": s.epoch, "step": s.step, "batch_in_epoch": s.batch_in_epoch,
        "world_size": s.ctx.world_size,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "early_stopping": run.early.state_dict(),
        "rng": rngs,
        "extra_state": {name: obj.state_dict() for name, obj in run.extra_state.items()},
    }
    if run.artifact.module is not s.model:
        out["model"] = s.model.state_dict()
    if run.ema is not None:
        out["ema"] = run.ema.state_dict()
    return out


def save(run: RunState, path: Path, gather: bool = True, extra: dict | None = None,
         weights: str = "raw") -> None:
    """Write a checkpoint atomically from rank 0 (every rank must call it when gather=True); `extra`
    joins the training state (best.pt: `selected_on`). weights="ema": the artefact part holds the
    moving average, the training state the trained weights."""
    from marsedge.models.checkpoints import save_checkpoint

    state = train_state(run, gather)
    if not run.state.ctx.is_main:
        return
    a = run.artifact
    # the data it learnt from, so that distillation can tell a teacher of other data (marsedge.distill)
    dataset = {"root": str(Path(run.state.cfg.data.root).resolve())}
    averaged = contextlib.nullcontext()
    if weights == "ema":
        state["model"] = {k: v.detach().cpu().clone() for k, v in run.state.model.state_dict().items()}
        averaged = run.ema.swapped_in()
    with averaged:
        save_checkpoint(path, a.module, a.model_config, a.preprocess,
                        extra={"train": state, "dataset": dataset, **(extra or {})}, classes=a.classes)


def _int_keys(optimizer_state: dict) -> dict:
    """The checkpoint stores dict keys as strings; an optimizer's per-parameter state is keyed by
    int parameter index and would otherwise be silently dropped on load."""
    per_param = {int(k): v for k, v in optimizer_state["state"].items()}
    return {**optimizer_state, "state": per_param}


def _check_model(run: RunState, path: Path, recorded: dict) -> None:
    """Another architecture is a one-line refusal naming what differs, not a size-mismatch traceback."""
    from marsedge.models.build import ModelConfig

    config = run.artifact.model_config
    now = (config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)).to_dict()
    recorded = ModelConfig.from_dict(recorded).to_dict()  # the same types and defaults on both sides
    differ = [k for k in sorted(recorded.keys() | now.keys()) if recorded.get(k) != now.get(k)]
    if differ:
        shown = ", ".join(f"model.{k} {recorded.get(k)!r} -> {now.get(k)!r}" for k in differ)
        raise ModelError(f"cannot resume {path}: it holds another model ({shown})")


def restore(run: RunState, path: Path) -> None:
    """Load last.pt into a freshly built run (same config) so training continues exactly."""
    from marsedge.models.checkpoints import load_checkpoint

    if not path.is_file():
        if (path.parent / "config.yaml").is_file():
            raise ModelError(f"cannot resume: {path} does not exist (the run in {path.parent} stopped before "
                             "its first checkpoint); start it again with --overwrite")
        raise ModelError(f"cannot resume: {path} does not exist (no earlier run of this name)")
    ckpt = load_checkpoint(path)
    state = (ckpt.extra or {}).get("train")
    if state is None:
        raise ModelError(f"cannot resume from {path}: it holds no training state")
    _check_model(run, path, ckpt.model_config)
    s = run.state
    if state["world_size"] != s.ctx.world_size:
        raise ModelError(f"cannot resume {path}: written with {state['world_size']} processes, "
                         f"now {s.ctx.world_size} (the data order would differ)")
    model_state = state.get("model", ckpt.state_dict)
    target = s.model if "model" in state else run.artifact.module
    target.load_state_dict(model_state)
    run.optimizer.load_state_dict(_int_keys(state["optimizer"]))
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.early.load_state_dict(state["early_stopping"])
    for name, obj in run.extra_state.items():
        if name not in state["extra_state"]:
            raise ModelError(f"cannot resume {path}: it has no state for {name!r}")
        obj.load_state_dict(state["extra_state"][name])
    if run.ema is not None:
        if "ema" not in state:
            raise ModelError(f"cannot resume {path}: it was trained without run.ema (no moving average "
                             "to continue)")
        run.ema.load_state_dict(state["ema"], str(path))
    s.epoch, s.step, s.batch_in_epoch = state["epoch"], state["step"], state["batch_in_epoch"]
    rngs = state["rng"]
    set_rng_state(rngs[s.ctx.rank] if s.ctx.rank < len(rngs) else rngs[0])
