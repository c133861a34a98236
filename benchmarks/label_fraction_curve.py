"""Test mIoU against the fraction of labelled training frames (1%, 10%, 100%) on synthetic data.

    python -m benchmarks.label_fraction_curve [--data DIR] [--steps 120]

The demo teacher (configs/demo/teacher.yaml: narrow ResNet-18 + DeepLabv3, 128 px) is finetuned
from scratch through train.py's own code path (mode `finetune`) on seeded, stratified
label fractions of one synthetic AI4Mars tree. Every fraction gets the same number of optimiser
steps (the small sets cycle more epochs), so the curve shows the effect of labels, not of compute.
An intensity baseline (each preprocessed grey level -> the commonest training class at that level,
fitted on 100% of the labels) is drawn for reference.

Writes benchmarks/results/label_fraction_curve.{json,png}.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import DEMO_TEACHER, RESULTS, command, run_config, synthetic_tree
from marsedge.data.ai4mars import AI4MarsDataset
from marsedge.data.preprocess import preprocess, resize_label
from marsedge.io import atomic_write_json
from marsedge.metrics import ConfusionMatrix
from marsedge.train.config import TrainConfig, load_train_config
from marsedge.train.supervised import training_set

FRACTIONS = (0.01, 0.1, 1.0)
TEST = "gold-min1"


def intensity_baseline(cfg: TrainConfig, test: str = TEST, bins: int = 32) -> dict:
    """Grey level -> majority training class, scored on the test set like the networks."""
    spec, k = cfg.data.preprocess, cfg.model.num_classes
    votes = np.zeros((bins, k), dtype=np.int64)
    for sample in AI4MarsDataset(cfg.data.root, "train"):
        level = np.minimum((preprocess(sample.image, spec)[0] * bins).astype(int), bins - 1).ravel()
        label = resize_label(sample.label, spec.height, spec.width).ravel()
        keep = label < k
        np.add.at(votes, (level[keep], label[keep]), 1)
    table = votes.argmax(axis=1)
    cm = ConfusionMatrix(k)
    for sample in AI4MarsDataset(cfg.data.root, test):
        level = np.minimum((preprocess(sample.image, spec)[0] * bins).astype(int), bins - 1)
        cm.update(table[level], resize_label(sample.label, spec.height, spec.width))
    m = cm.compute()
    return {"miou": m["miou"], "pixel_accuracy": m["pixel_accuracy"]}


def train_fraction(base: list[str], fraction: float, steps: int, out: Path) -> dict:
    probe = load_train_config(TrainConfig, DEMO_TEACHER, [*base, f"data.label_fraction={fraction}"])
    frames = len(training_set(probe.data, probe.seed))
    batch = min(probe.batch_size, frames)
    epochs = math.ceil(steps / (frames // batch))
    cfg = load_train_config(TrainConfig, DEMO_TEACHER, [
        *base, f"data.label_fraction={fraction}", f"batch_size={batch}", f"epochs={epochs}",
        f"run.eval_every={epochs}", f"run.out_dir={out}", f"name=lf{fraction:g}",
        f"data.test_splits=[{TEST}]", "run.confusion_png=false", "run.progress=false"])
    result = run_config(cfg)
    m = result["last_metrics"]
    return {"fraction": fraction, "frames": frames, "batch_size": batch, "epochs": epochs,
            "steps": result["step"], "miou": m["miou"], "pixel_accuracy": m["pixel_accuracy"],
            "wall_s": result["seconds"]}


def plot(rows: list[dict], baseline: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    x = [100 * r["fraction"] for r in rows]
    ax.plot(x, [r["miou"] for r in rows], "o-", label="demo teacher mIoU")
    ax.plot(x, [r["pixel_accuracy"] for r in rows], "s--", label="demo teacher pixel accuracy")
    ax.axhline(baseline["miou"], color="grey", ls=":", label="intensity baseline mIoU")
    for r in rows:
        ax.annotate(f"{r['frames']} frames", (100 * r["fraction"], r["miou"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training frames (%)")
    ax.set_ylabel(f"{TEST} score")
    ax.set_ylim(0, 1)
    ax.set_title("Label fraction, synthetic AI4Mars, same step budget")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="AI4Mars-layout tree (default: synthesise 360 frames)")
    parser.add_argument("--steps", type=int, default=120, help="optimiser steps per fraction")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = synthetic_tree(Path(tmp) / "data", 360, 192)
        base = [f"data.root={root}", f"num_workers={args.workers}"]
        rows = [train_fraction(base, f, args.steps, Path(tmp) / "runs") for f in FRACTIONS]
        demo = load_train_config(TrainConfig, DEMO_TEACHER, base)
        baseline = intensity_baseline(demo)
    atomic_write_json(RESULTS / "label_fraction_curve.json",
                      {"command": command("label_fraction_curve", sys.argv[1:]),
                       "test_split": TEST, "runs": rows, "intensity_baseline": baseline})
    plot(rows, baseline, RESULTS / "label_fraction_curve.png")
    for r in rows:
        print(f"{100 * r['fraction']:5.1f}% ({r['frames']:3d} frames, {r['steps']} steps): "
              f"mIoU {r['miou']:.3f}, pixel accuracy {r['pixel_accuracy']:.3f}, {r['wall_s']:.0f} s")
    print(f"intensity baseline: mIoU {baseline['miou']:.3f}, pixel accuracy {baseline['pixel_accuracy']:.3f}")


if __name__ == "__main__":
    main()
