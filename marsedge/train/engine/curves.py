"""runs/<name>/curves.png: the training loss terms, the learning rate and the val metrics against
optimiser steps, drawn from metrics.jsonl (the run's record) and rewritten atomically at every
evaluation, so a run can be followed without TensorBoard (e.g. over ssh with an image viewer)."""

from __future__ import annotations

import json
from pathlib import Path

from marsedge.io import atomic_write

CURVES = "curves.png"
_NOT_PLOTTED = {"kind", "epoch", "step", "time_s", "lr"}
# val scalars shown beside the selection metric, where the evaluator gives them
_HEADLINES = ("miou", "pixel_accuracy", "macc", "top1", "balanced_accuracy", "accuracy")


def _records(jsonl: Path) -> list[dict]:
    if not jsonl.is_file():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [s for s, _ in points], [float(v) for _, v in points]


def plot_curves(run_dir: Path, metric: str) -> Path | None:
    """Draw runs/<name>/curves.png from runs/<name>/metrics.jsonl; None when there is nothing yet."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, the Agg canvas

    records = _records(run_dir / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    fig = Figure(figsize=(15, 4))
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.14, top=0.91, wspace=0.2)
    loss_ax, lr_ax, val_ax = fig.subplots(1, 3)
    terms = sorted({k for r in train for k, v in r.items() if k not in _NOT_PLOTTED and isinstance(v, float)})
    for key in terms:
        loss_ax.plot(*_series(train, key), label=key, linewidth=1)
    loss_ax.set(title="training loss (window means)", xlabel="step")
    lr_ax.plot(*_series(train, "lr"), color="tab:gray")
    lr_ax.set(title="learning rate", xlabel="step")
    shown = [metric, f"ema/{metric}", *(k for k in _HEADLINES if k != metric)]
    for key in dict.fromkeys(shown):
        steps, values = _series(evals, key)
        if values:
            val_ax.plot(steps, values, marker="o", markersize=3, label=key)
    probe = any("probe_train_pixels" in r for r in evals)  # pretraining's feature probe (marsedge.ssl.probe)
    val_ax.set(title="val, feature probe" if probe else f"val (best.pt chosen on {metric})", xlabel="step")
    for ax in (loss_ax, val_ax):
        if ax.has_data():
            ax.legend(fontsize=8)
    for ax in (loss_ax, lr_ax, val_ax):
        ax.grid(alpha=0.3)
    return atomic_write(run_dir / CURVES, lambda tmp: fig.savefig(tmp, dpi=80))
