"""The evaluation protocol inside the loop: choose on `val`, score the test splits once.

Everything a run chooses (best.pt, early stopping) is chosen on the evaluator the mode passes to
`fit`, which reads the `val` split; an evaluator that names a test split is refused before any
work. When training ends (not on Ctrl-C), the test evaluator runs once on the weights of best.pt
and `runs/<name>/test_metrics.json` records them with what they were selected on:

    {"checkpoint": "runs/x/best.pt",
     "selected_on": {"split": "val", "metric": "miou", "epoch": 7, "weights": "raw"},
     "metrics": {"miou": ..., "gold-min3/miou": ..., ...}}

`weights` is "ema" when the moving average of the weights (`run.ema`) scored better than the
weights themselves at that epoch, and best.pt then holds the average (marsedge.train.engine.ema).
`selected_on` is also written into best.pt (extra["selected_on"]). A run without a val split
(data.val_fraction 0, pretraining) selects nothing: best.pt is the final weights, and
`selected_on` says so with split and metric null.
"""

from __future__ import annotations

from pathlib import Path

from marsedge.data.ai4mars import TEST_SPLITS
from marsedge.errors import ConfigError
from marsedge.io import atomic_write_json
from marsedge.train.engine.runlog import json_safe
from marsedge.train.engine.state import Evaluator, RunState

TEST_METRICS = "test_metrics.json"


def check_selection(evaluator: Evaluator | None) -> None:
    """Refuse a selection evaluator that reads a test split (it would tune on the test set)."""
    leaked = [s for s in getattr(evaluator, "splits", ()) if s in TEST_SPLITS]
    if leaked:
        raise ConfigError(f"config key 'data.test_splits': {leaked[0]!r} cannot drive selection or early "
                          "stopping; the loop selects on 'val' and scores test splits once at the end")


def selected_on(run: RunState, selects: bool) -> dict:
    """What best.pt was chosen on: the val metric, its epoch and which weights; or the final weights."""
    if not selects:
        return {"split": None, "metric": None, "epoch": run.state.epoch, "weights": "raw"}
    return {"split": "val", "metric": run.state.cfg.run.early_stop_metric, "epoch": run.early.best_epoch,
            "weights": run.ema.best if run.ema is not None else "raw"}


def write_test_metrics(run_dir: Path, checkpoint: Path, selection: dict, metrics: dict) -> Path:
    """runs/<name>/test_metrics.json, atomically (NaN, a class absent from a set, as null)."""
    return atomic_write_json(run_dir / TEST_METRICS, json_safe(
        {"checkpoint": str(checkpoint), "selected_on": selection, "metrics": metrics}))
