#!/usr/bin/env python
"""Does the big-teacher -> small-student chain pay off when labels are scarce? (SimCLRv2's protocol)

    python benchmarks/teacher_student.py            # 3 seeds x 1 % and 10 % labels (about an hour, 2 cores)
    python benchmarks/teacher_student.py --quick    # 1 seed, fewer steps: a smoke run of every row

Chen et al. 2020 ("Big Self-Supervised Models are Strong Semi-Supervised Learners") pretrain a big
network on unlabelled images, finetune it on 1 % or 10 % of the labels and distil it into a smaller
network on the unlabelled images. Here, on one synthetic MSL tree (`marsedge data synth`), for each
label fraction and seed:

  1. student (MobileNetV2 + separable DeepLabv3+) from scratch on the labelled fraction;
  2. teacher (a ResNet-18 of 2x the demo's width + DeepLabv3, >= 5x the student's MACs), SimCLR-
     pretrained on every frame the run may see without labels (the train split minus val, and the
     tree's unlabelled split), then finetuned on the labelled fraction;
  2b. the same teacher from random init (what the pretraining adds);
  3. the student distilled from (2) on the labelled fraction plus those unlabelled frames (pixel KD
     with the teacher run live on the same augmented view, plus cross-entropy on labelled pixels).

Every supervised row trains for the same number of optimiser steps (`--steps`, batch 8), selects
best.pt on the val split (10 % of the train labels by clock group, the same val for every seed and
fraction: `data.val_seed=0`) and scores the gold-min3 test split once, at the end. The labelled
fraction is `marsedge.data.sampling.label_fraction` (stratified by mission, seeded by the run seed).
Gap recovered = (3 - 1) / (2 - 1), on the means over seeds.

Writes OUT/teacher_student.json, .md and .png (test mIoU per label fraction, one line per row, error
bars = standard deviation over seeds) and prints the table. Runs and data go under --work; a run
already finished there (its test_metrics.json exists) is read back, not trained again, so an
interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from marsedge.bench.environment import cpu_model  # noqa: E402
from marsedge.io import atomic_write_json, atomic_write_text  # noqa: E402

TEST = "gold-min3"
STUDENT = {"backbone": "mnv2_0.35", "head": "deeplabv3plus", "separable": True, "head_channels": 32,
           "output_stride": 16, "num_classes": 6, "in_channels": 1}
TEACHER = {"backbone": "r18_0.5x_sk0", "head": "deeplabv3", "head_channels": 64, "output_stride": 16,
           "num_classes": 6, "in_channels": 1}
PREPROCESS = {"height": 128, "width": 128, "channels": 1, "gain": 1.5}
AUGMENT = {"hflip": 0.5, "scale": [0.8, 1.25], "brightness": 0.1, "contrast": 0.2}
ROWS = ("student from scratch", "teacher, SimCLR-pretrained", "teacher, random init", "student distilled")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/bench_teacher_student", help="data and runs go here")
    p.add_argument("--out", default=str(REPO / "benchmarks/results"))
    p.add_argument("--quick", action="store_true", help="1 seed, 60 steps, 2 pretraining epochs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--fractions", default="0.01,0.1", help="label fractions of the train split")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps of every supervised row")
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--labelled", type=int, default=1000, help="labelled synthetic frames (train + test)")
    p.add_argument("--unlabelled", type=int, default=400, help="unlabelled synthetic frames")
    p.add_argument("--size", type=int, default=128, help="synthetic frame size (px)")
    p.add_argument("--data-seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.pretrain_epochs = 1, 60, 2
    args.fractions = [float(f) for f in args.fractions.split(",")]
    return args


# ---- one run through train.py's own modes ---------------------------------------------------


def run_mode(work: Path, name: str, config: dict) -> dict:
    """Train one config (written to work/configs/NAME.yaml) through its mode; the test metrics and wall
    time. A finished run (its bench.json exists) is read back instead (resume)."""
    from marsedge.train.config import load_train_config
    from marsedge.train.modes import resolve_mode

    run_dir = work / "runs" / name
    if (run_dir / "bench.json").is_file():
        return json.loads((run_dir / "bench.json").read_text())
    path = work / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {"out_dir": str(work / "runs"), "device": "cpu", "progress": False, "log_every": 10,
           "confusion_png": False, **config.pop("run", {})}
    path.write_text(yaml.safe_dump({"num_workers": 1, **config, "name": name, "run": run}, sort_keys=False))
    mode = resolve_mode(config["mode"])
    cfg = load_train_config(mode.config, path, [])
    start = time.perf_counter()
    summary = mode.run(cfg)
    result = {"wall_s": round(time.perf_counter() - start, 1), "steps": summary["step"],
              "best_epoch": summary["best"]["epoch"], "val_miou": summary["best"]["value"]}
    if config["mode"] != "pretrain":
        metrics = summary["test_metrics"]
        result.update(miou=metrics[f"{TEST}/miou"], iou=metrics[f"{TEST}/iou"])
    atomic_write_json(run_dir / "bench.json", result)
    print(f"  {name}: {result.get('miou', float('nan')):.4f} test mIoU, {result['wall_s']} s", flush=True)
    return result


def data_section(root: Path, fraction: float) -> dict:
    return {"root": str(root), "train_splits": ["train"], "val_fraction": 0.1, "val_seed": 0,
            "label_fraction": fraction, "test_splits": [TEST], "preprocess": PREPROCESS,
            "augment": AUGMENT, "eval_batch_size": 32}


def schedule(frames: int, steps: int, evaluations: int = 10) -> dict:
    """Epochs, batch size and evaluation cadence that give `steps` optimiser steps over `frames`."""
    batch = min(8, frames)
    per_epoch = frames // batch
    epochs = math.ceil(steps / per_epoch)
    # a loader worker is re-forked every epoch (datasets take their augmentation epoch that way): at a
    # step or two per epoch that costs more than it saves, so the smallest sets load in-process
    return {"epochs": epochs, "batch_size": batch, "num_workers": 0 if per_epoch < 4 else 1,
            "run": {"max_steps": steps, "eval_every": max(1, epochs // evaluations),
                    "early_stop_metric": "miou"}}


def supervised(root: Path, model: dict, fraction: float, seed: int, steps: int, init: str | None) -> dict:
    from marsedge.config import from_dict
    from marsedge.train.config import DataConfig
    from marsedge.train.supervised import training_set

    data = data_section(root, fraction)
    frames = len(training_set(from_dict(DataConfig, data), seed))
    optim = {"name": "adamw", "lr": 0.004, "weight_decay": 1e-4, "schedule": "poly", "warmup_epochs": 0.5}
    config = {"mode": "finetune", "seed": seed, "model": model, "data": data, "optim": optim,
              "loss": {"name": "ce"}, **schedule(frames, steps)}
    if init is not None:
        config["init"] = {"checkpoint": init, "backbone_only": True}
    return config


# ---- the frames each seed may see without labels --------------------------------------------


def unlabelled_pool(root: Path, fraction: float | None, seed: int, folder: Path) -> Path:
    """Hard links to the train split's images that are neither val nor (unless fraction is None) in
    this seed's labelled fraction: the train frames distillation (pretraining) sees without labels."""
    from marsedge.config import from_dict
    from marsedge.train.config import DataConfig
    from marsedge.train.supervised import split_training_labels, training_set

    cfg = from_dict(DataConfig, data_section(root, fraction or 1.0))
    train, _ = split_training_labels(cfg, seed)
    labelled = {item.image for item in training_set(cfg, seed).items} if fraction is not None else set()
    folder.mkdir(parents=True, exist_ok=True)
    for item in train:
        target = folder / Path(item.image).name
        if item.image not in labelled and not target.exists():
            os.link(item.image, target)
    return folder


def pretrain(work: Path, root: Path, pool: Path, seed: int, epochs: int) -> tuple[Path, float]:
    """SimCLR of the teacher's backbone on `pool` + the unlabelled split: (best.pt, wall seconds)."""
    sources = [{"root": str(root), "split": "unlabelled"}, {"root": str(pool), "kind": "folder"}]
    model = {k: TEACHER[k] for k in ("backbone", "in_channels")} | {"output_stride": 32}
    config = {"mode": "pretrain", "seed": seed, "epochs": epochs, "batch_size": 64, "model": model,
              "data": {"root": str(root), "preprocess": PREPROCESS},
              "optim": {"name": "lars", "lr": 0.6, "weight_decay": 1e-6, "schedule": "cosine",
                        "warmup_epochs": 1},
              "pretrain": {"temperature": 0.5, "sources": sources}, "run": {"eval_every": 0}}
    name = f"simclr_s{seed}"
    return work / "runs" / name / "best.pt", run_mode(work, name, config)["wall_s"]


def distilled(root: Path, teacher: Path, pool: Path, fraction: float, seed: int, steps: int) -> dict:
    from marsedge.config import from_dict
    from marsedge.distill.config import DistillConfig
    from marsedge.distill.data import build_distill_set

    config = supervised(root, STUDENT, fraction, seed, steps, None)
    config.update(mode="distill", distill={
        "teacher": str(teacher), "gt_weight": 1.0, "kd_weight": 1.0, "temperature": 2.0,
        "unlabelled": [{"root": str(root), "split": "unlabelled"}, {"root": str(pool), "kind": "folder"}]})
    probe = from_dict(DistillConfig, {k: v for k, v in config.items() if k != "run"})
    return {**config, **schedule(len(build_distill_set(probe)), steps)}


# ---- the benchmark ----------------------------------------------------------------------------


def run_seed(work: Path, root: Path, seed: int, args: argparse.Namespace) -> dict:
    results: dict = {}
    # pretraining is label-free: one per seed, on every train frame but val's, and the unlabelled split
    pool = unlabelled_pool(root, None, seed, work / f"pool_s{seed}_pretrain")
    simclr, results["pretrain_wall_s"] = pretrain(work, root, pool, seed, args.pretrain_epochs)
    for fraction in args.fractions:
        results[f"{fraction:g}"] = run_fraction(work, root, simclr, fraction, seed, args.steps)
    return results


def run_fraction(work: Path, root: Path, simclr: Path, f: float, seed: int, n: int) -> dict:
    """The four rows at one label fraction and seed (the distilled student learns from row 2)."""
    tag = f"f{f:g}_s{seed}"
    pool = unlabelled_pool(root, f, seed, work / f"pool_{tag}")
    row = {ROWS[0]: run_mode(work, f"scratch_{tag}", supervised(root, STUDENT, f, seed, n, None))}
    row[ROWS[1]] = run_mode(work, f"teacher_{tag}", supervised(root, TEACHER, f, seed, n, str(simclr)))
    row[ROWS[2]] = run_mode(work, f"teacher_scratch_{tag}", supervised(root, TEACHER, f, seed, n, None))
    teacher = work / "runs" / f"teacher_{tag}" / "best.pt"
    row[ROWS[3]] = run_mode(work, f"distilled_{tag}", distilled(root, teacher, pool, f, seed, n))
    return row


def summarise(per_seed: list[dict], fractions: list[float]) -> dict:
    out = {}
    for fraction in fractions:
        key = f"{fraction:g}"
        rows = {}
        for name in ROWS:
            runs = [seed[key][name] for seed in per_seed]
            mious = [r["miou"] for r in runs]
            per_class = {c: [r["iou"].get(c) for r in runs] for c in ("sand", "big rock")}
            rows[name] = {"miou_per_seed": mious, "miou_mean": float(np.mean(mious)),
                          "miou_std": float(np.std(mious, ddof=1)) if len(mious) > 1 else 0.0,
                          "iou_per_seed": per_class, "wall_s": sum(r["wall_s"] for r in runs)}
        scratch, teacher, student = (rows[n]["miou_mean"] for n in (ROWS[0], ROWS[1], ROWS[3]))
        gap = teacher - scratch
        out[key] = {"rows": rows, "gap": gap, "gap_recovered": (student - scratch) / gap if gap > 0 else None,
                    "pretraining_gain": teacher - rows[ROWS[2]]["miou_mean"]}
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted(summary, key=float)
    xs = [100 * float(f) for f in fractions]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for i, name in enumerate(ROWS):
        means = [summary[f]["rows"][name]["miou_mean"] for f in fractions]
        stds = [summary[f]["rows"][name]["miou_std"] for f in fractions]
        ax.errorbar([x * (1 + 0.04 * (i - 1.5)) for x in xs], means, yerr=stds, marker="o", capsize=4,
                    label=name)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g} %" for x in xs])
    ax.set_xlabel("labelled fraction of the train split")
    ax.set_ylabel(f"test mIoU ({TEST}, mean ± std over seeds)")
    ax.set_title("Big teacher -> small student, synthetic MSL, CPU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(result: dict) -> str:
    s = result["setup"]
    baseline = s["intensity_baseline"]
    lines = ["# Big teacher -> small student at 1 % and 10 % labels (synthetic MSL, CPU)", "",
             f"`{s['command']}` on {s['cpu']} ({s['threads']} threads), {s['seeds']} seed(s), "
             f"{s['steps']} optimiser steps per row (batch 8, {PREPROCESS['height']} px), total "
             f"{result['total_s'] / 60:.1f} min of training summed over the runs (each run's wall time is in "
             "the json; some runs shared the CPU with other jobs; a resumed run of it reads them back).",
             "",
             f"Student {s['student']['backbone']} + {s['student']['head']}: {s['student_gmacs']:.3f} GMACs; "
             f"teacher {s['teacher']['backbone']} + {s['teacher']['head']}: {s['teacher_gmacs']:.3f} GMACs "
             f"({s['teacher_gmacs'] / s['student_gmacs']:.1f}x). Intensity-only baseline (grey level -> "
             f"commonest class, 100 % labels): pixel accuracy {baseline['pixel_accuracy']:.3f}, "
             f"mIoU {baseline['miou']:.3f}.", ""]
    for fraction, block in result["summary"].items():
        lines += [f"## {100 * float(fraction):g} % labels ({block['labelled_frames']} frames)", "",
                  "| row | test mIoU (mean ± std) | per seed | sand IoU | big rock IoU | wall s |",
                  "|---|---|---|---|---|---|"]
        for name, r in block["rows"].items():
            def cls(c, r=r):
                return ", ".join("n/a" if v is None else f"{v:.3f}" for v in r["iou_per_seed"][c])

            lines.append(f"| {name} | {r['miou_mean']:.4f} ± {r['miou_std']:.4f} | "
                         f"{', '.join(f'{m:.4f}' for m in r['miou_per_seed'])} | {cls('sand')} | "
                         f"{cls('big rock')} | {r['wall_s']:.0f} |")
        gap = "n/a (no gap)" if block["gap_recovered"] is None else f"{block['gap_recovered']:.2f}"
        lines += ["", f"Teacher - scratch student: {block['gap']:+.4f} mIoU; gap recovered by distillation: "
                      f"{gap}; SimCLR pretraining vs random init (teacher): "
                      f"{block['pretraining_gain']:+.4f}.", ""]
    lines += ["![test mIoU per label fraction](teacher_student.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from label_fraction_curve import intensity_baseline

    from marsedge.models.build import ModelConfig, build_model
    from marsedge.models.summary import count_macs
    from marsedge.synthetic.navcam import SynthOptions, generate
    from marsedge.train.config import TrainConfig, load_train_config
    from marsedge.train.supervised import training_set

    work, out = Path(args.work).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = work / "data"
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    if not (root / "msl").is_dir():
        generate(SynthOptions(str(root), "msl", n=args.labelled, size=args.size, seed=args.data_seed,
                              test_fraction=0.2, unlabelled=args.unlabelled), progress=True)
    per_seed = [run_seed(work, root, seed, args) for seed in range(args.seeds)]
    summary = summarise(per_seed, args.fractions)
    base = load_train_config(TrainConfig, REPO / "configs/demo/teacher.yaml", [f"data.root={root}"])
    for fraction in args.fractions:
        base.data.label_fraction, base.data.val_seed = fraction, 0
        summary[f"{fraction:g}"]["labelled_frames"] = len(training_set(base.data, 0))

    def gmacs(model: dict) -> float:
        size = (PREPROCESS["height"], PREPROCESS["width"])
        return count_macs(build_model(ModelConfig(**model)), size)["total"] / 1e9

    setup = {"command": "python benchmarks/teacher_student.py " + " ".join(argv or sys.argv[1:]),
             "cpu": cpu_model(), "threads": os.cpu_count(), "seeds": args.seeds, "steps": args.steps,
             "pretrain_epochs": args.pretrain_epochs, "labelled": args.labelled,
             "unlabelled": args.unlabelled, "size": args.size, "student": STUDENT, "teacher": TEACHER,
             "student_gmacs": gmacs(STUDENT),
             "teacher_gmacs": gmacs(TEACHER), "test_split": TEST,
             "intensity_baseline": intensity_baseline(base, TEST),
             "load_average": [round(load_start, 1), round(os.getloadavg()[0], 1)]}
    # the runs' own wall times (an interrupted benchmark resumes; this invocation's time is not the cost)
    trained = sum(seed["pretrain_wall_s"] + sum(r["wall_s"] for f in args.fractions
                                                for r in seed[f"{f:g}"].values()) for seed in per_seed)
    result = {"setup": setup, "per_seed": per_seed, "summary": summary, "total_s": round(trained, 1),
              "invocation_s": round(time.perf_counter() - start, 1)}
    stem = "teacher_student_quick" if args.quick else "teacher_student"
    atomic_write_json(out / f"{stem}.json", result)
    plot(summary, out / f"{stem}.png")
    text = report(result).replace("teacher_student.png", f"{stem}.png")
    atomic_write_text(out / f"{stem}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
