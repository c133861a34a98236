#!/usr/bin/env python
"""Does distillation help the demo student? Scratch vs pixel KD vs channel-wise vs the teacher.

    python -m benchmarks.distill_comparison                         # synthesise data, train the teacher
    python -m benchmarks.distill_comparison --teacher runs/demo/demo_teacher/best.pt --data runs/demo/data

Every student uses configs/demo/student.yaml with the same budget: the same labelled frames,
optimiser, batch size, seed and number of optimiser steps. The distilled students may also see the
data tree's unlabelled frames (one of the things distillation offers; `--no-unlabelled` turns it
off, and `--labelled-only-row` adds a pixel-KD row without them). With balanced batches (the
default) a step holds as many labelled frames as the scratch student's, so the epochs and steps are
the scratch student's; with `distill.sampling=pooled` they run fewer epochs over the larger set so
that the step count stays that of the scratch student (the `epochs` column).
Students are evaluated once, after the last epoch (`run.eval_every=0`), so no test frame selects a
checkpoint. The teacher comes from the train.py API (configs/demo/teacher.yaml with `--teacher-set`
overrides, its last epoch) unless `--teacher`. Every student trains on the teacher config's
augmentation, and the distilled ones get the live teacher's logits for the same augmented view
(consistent teaching); `--cached` instead uses un-augmented frames and the teacher-logit cache, as
`make demo` does.

The committed results (benchmarks/results/distill_comparison*.md) came from

    marsedge data synth --out DATA --mission msl --n 560 --size 192 --seed 1 --test-fraction 0.25 \
        --unlabelled 420
    python train.py --config configs/demo/teacher.yaml data.root=DATA run.out_dir=RUNS name=teacher_v3 \
        model.backbone=r18_0.5x_sk0 model.head=deeplabv3plus model.head_channels=128 epochs=40
    python -m benchmarks.distill_comparison --teacher RUNS/teacher_v3/last.pt --data DATA --epochs 12
    python -m benchmarks.distill_comparison --teacher RUNS/teacher_v3/last.pt --data DATA --epochs 20 \
        --feature-pairs low=low,layer2=layer2,layer3=layer3 --stem distill_comparison_20ep

Writes OUT/STEM.json and .md (STEM is `--stem`, default distill_comparison: mIoU, pixel accuracy,
big-rock recall on the first gold set, params, MACs at the input size, wall time) and prints the
table. `--feature-pairs` adds a row with pixel KD plus feature distillation. The goal:
distillation recovers at least half of the mIoU gap between the scratch student and the teacher,
gap recovered = (mIoU_distilled - mIoU_scratch) / (mIoU_teacher - mIoU_scratch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.common import (
    DEMO_STUDENT,
    DEMO_TEACHER,
    RESULTS,
    command,
    run_config,
    synthetic_tree,
    write_result,
)
from marsedge.config import from_dict, to_dict

BIG_ROCK = "big rock"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", help="trained demo teacher checkpoint (default: train one)")
    p.add_argument("--data", help="AI4Mars-layout data tree (default: synthesise one under --work)")
    p.add_argument("--work", default="runs/bench_distill", help="runs, cache and synthetic data go here")
    p.add_argument("--out", default=str(RESULTS), help="where the table is written")
    p.add_argument("--frames", type=int, default=120, help="labelled frames to synthesise (train + gold)")
    p.add_argument("--unlabelled", type=int, default=120, help="unlabelled frames to synthesise")
    p.add_argument("--frame-size", type=int, default=128, help="synthetic frame size (px)")
    p.add_argument("--seed", type=int, default=0, help="synthetic dataset seed")
    p.add_argument("--epochs", type=int, default=8, help="student epochs (every student the same)")
    p.add_argument("--teacher-epochs", type=int, help="epochs of a teacher trained here (default: config)")
    p.add_argument("--teacher-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of configs/demo/teacher.yaml for a teacher trained here (repeatable), "
                        "e.g. model.backbone=r18_0.5x_sk0")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--cwd-weight", type=float, default=3.0)
    p.add_argument("--cwd-tau", type=float, default=4.0)
    p.add_argument("--cwd-pairs", default="", metavar="S=T,...",
                   help="the channel-wise row also distils these student=teacher stage maps, e.g. head=head")
    p.add_argument("--feature-pairs", default="", metavar="S=T,...",
                   help="add a row: pixel KD plus feature distillation (FitNets) of these student=teacher "
                        "stages, e.g. low=low,layer2=layer2,layer3=layer3")
    p.add_argument("--feature-weight", type=float, default=2.0)
    p.add_argument("--stem", default="distill_comparison", help="file name of the written table (no suffix)")
    p.add_argument("--cached", action="store_true",
                   help="students see un-augmented frames and the teacher's cached logits (the demo's "
                        "setting) instead of augmented frames with the teacher run live on the same view")
    p.add_argument("--no-unlabelled", action="store_true", help="distil on the labelled frames only")
    p.add_argument("--labelled-only-row", action="store_true",
                   help="add pixel KD on the labelled frames only (isolates the unlabelled frames)")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every student config")
    return p.parse_args(argv)


def train_teacher(data: Path, work: Path, args: argparse.Namespace) -> Path:
    """The demo teacher config with --teacher-set overrides; its last epoch is the teacher (the best
    one would be chosen on the test split this benchmark scores on)."""
    from marsedge.train.config import TrainConfig, load_train_config

    overrides = [*args.teacher_set, f"data.root={data}", f"run.out_dir={work}", "name=teacher"]
    overrides += [f"epochs={args.teacher_epochs}"] if args.teacher_epochs else []
    run_config(load_train_config(TrainConfig, DEMO_TEACHER, overrides))
    return work / "teacher" / "last.pt"


def student_config(args: argparse.Namespace, data: Path, work: Path, teacher: Path, name: str, **distill):
    from marsedge.distill.config import DistillConfig
    from marsedge.train.config import TrainConfig, load_train_config

    unlabelled = [] if args.no_unlabelled else [{"root": str(data), "split": "unlabelled"}]
    overrides = [f"name={name}", f"data.root={data}", f"run.out_dir={work}", f"epochs={args.epochs}",
                 "run.eval_every=0", f"distill.teacher={teacher}",
                 f"distill.cache_dir={work / 'teacher_logits'}",
                 f"distill.unlabelled={json.dumps(unlabelled)}", *args.overrides]
    cfg = load_train_config(DistillConfig, DEMO_STUDENT, overrides)
    cfg.distill = dataclasses.replace(cfg.distill, **distill)  # read like the YAML (terms in full)
    if not args.cached:  # every student sees the teacher's augmentation; KD targets come from that view
        cfg.data.augment = load_train_config(TrainConfig, DEMO_TEACHER, []).data.augment
        cfg.distill.cache_dir = None
    cfg.validate()
    return cfg


def equal_step_epochs(cfg, epochs: int) -> int:
    """Epochs over labelled + unlabelled frames that take as many optimiser steps as `epochs` over
    the labelled frames alone: the same compute budget, each frame seen fewer times. Balanced
    batches already count epochs in passes over the labelled frames."""
    from marsedge.distill.data import build_distill_set

    if cfg.distill.sampling == "balanced":
        return epochs

    frames = build_distill_set(cfg)
    return max(1, round(epochs * len(frames.labelled) / len(frames)))


def run_scratch(cfg, resume: bool) -> Path:
    """The same student, data and budget through the plain finetune mode (no teacher at all)."""
    from marsedge.train.config import TrainConfig

    plain = to_dict(cfg)
    plain.pop("distill")
    plain["mode"] = "finetune"
    run_config(from_dict(TrainConfig, plain), resume)
    return cfg.run_dir / "best.pt"


def evaluate(checkpoint: Path, data: Path, split: str) -> dict:

    from marsedge.bench.modelinfo import torch_info
    from marsedge.data.ai4mars import AI4MarsDataset
    from marsedge.data.preprocess import PreprocessSpec
    from marsedge.metrics import segmentation_metrics
    from marsedge.models.checkpoints import load_model
    from marsedge.train.engine.distributed import DistContext
    from marsedge.train.supervised import SegmentationFrames, build_eval_loader, confusion_matrix

    model, ckpt = load_model(checkpoint)
    spec = PreprocessSpec.from_dict(ckpt.preprocess)
    loader = build_eval_loader(SegmentationFrames(AI4MarsDataset(data, split), spec), 16, DistContext())
    matrix = confusion_matrix(model, loader, model.config.num_classes, DistContext())  # (no_grad inside)
    metrics = segmentation_metrics(matrix)
    info = torch_info(model, (spec.channels, spec.height, spec.width))
    return {"miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"],
            "big_rock_recall": metrics["recall"][BIG_ROCK], "params": info["params"], "macs": info["macs"],
            "backbone": model.config.backbone, "frames": len(loader.dataset)}


def timed(fn, *a):
    start = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - start


def table(rows: list[dict], split: str) -> str:
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    lines = [f"| model ({split}) | mIoU | pixel acc | big-rock recall | params | MACs | epochs | "
             "gap recovered | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {fmt(r['miou'], '.4f')} | {fmt(r['pixel_accuracy'], '.4f')} | "
                     f"{fmt(r['big_rock_recall'], '.4f')} | {r['params'] / 1e6:.3f} M | "
                     f"{r['macs'] / 1e6:.1f} M | {r.get('epochs', '')} | "
                     f"{fmt(r.get('gap_recovered'), '.2f')} | {fmt(r.get('wall_s'), '.0f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    data = Path(args.data).resolve() if args.data else synthetic_tree(
        work / "data", args.frames, args.frame_size, seed=args.seed, test_fraction=0.25,
        unlabelled=args.unlabelled, progress=True)
    teacher_wall = None
    if args.teacher:
        teacher = Path(args.teacher).resolve()
    else:
        teacher, teacher_wall = timed(train_teacher, data, work, args)

    cwd_pairs = parse_pairs("--cwd-pairs", args.cwd_pairs) if args.cwd_pairs else {}
    cwd_maps = f"; logits + {', '.join(cwd_pairs)}" if cwd_pairs else ""
    variants: dict[str, dict | None] = {"student, scratch": None}  # None = no teacher (plain finetune)
    kd = {"kd": {"weight": 1.0, "temperature": args.temperature}}
    if args.labelled_only_row and not args.no_unlabelled:
        variants[f"student, pixel KD (T={args.temperature:g}), labelled only"] = dict(terms=kd, unlabelled=[])
    variants[f"student, pixel KD (T={args.temperature:g})"] = dict(terms=kd)
    variants[f"student, channel-wise (tau={args.cwd_tau:g}, w={args.cwd_weight:g}{cwd_maps})"] = dict(
        terms={"cwd": {"weight": args.cwd_weight, "tau": args.cwd_tau, "pairs": cwd_pairs}})
    if args.feature_pairs:
        pairs = parse_pairs("--feature-pairs", args.feature_pairs)
        label = f"student, pixel KD + features ({', '.join(pairs)}; w={args.feature_weight:g})"
        variants[label] = dict(terms={**kd, "feature": {"weight": args.feature_weight, "pairs": pairs}})
    first_split = None
    results = []
    for i, (label, settings) in enumerate(variants.items()):
        cfg = student_config(args, data, work, teacher, f"student_{i}", **(settings or {}))
        if settings is not None and cfg.distill.unlabelled:
            cfg.epochs = equal_step_epochs(cfg, args.epochs)
        first_split = cfg.data.test_splits[0]
        resume = (cfg.run_dir / "last.pt").exists()  # a rerun continues (or reuses) each student's run
        if resume:
            print(f"[{cfg.name}] resuming {cfg.run_dir / 'last.pt'} (wall s then counts this part only)")
        if settings is None:
            checkpoint, wall = timed(run_scratch, cfg, resume)
        else:
            summary, wall = timed(run_config, cfg, resume)
            checkpoint = Path(summary["student"])
        results.append({"name": label, "wall_s": wall, "checkpoint": str(checkpoint), "epochs": cfg.epochs,
                        "uses_unlabelled": settings is not None and bool(cfg.distill.unlabelled),
                        **evaluate(checkpoint, data, first_split)})
    results.append({"name": "teacher", "wall_s": teacher_wall, "checkpoint": str(teacher),
                    **evaluate(teacher, data, first_split)})

    add_gap_recovered(results)
    text = table(results, first_split)
    print(text)
    write_results(Path(args.out) / args.stem, results, first_split, args, data, teacher)
    return 0


def parse_pairs(option: str, text: str) -> dict[str, str]:
    """'low=low,layer3=layer3' -> {'low': 'low', 'layer3': 'layer3'} (student stage -> teacher stage)."""
    pairs = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
    if not pairs or len(pairs) != len(text.split(",")):
        raise SystemExit(f"{option}: expected STUDENT=TEACHER[,...], got {text!r}")
    return pairs


def add_gap_recovered(results: list[dict]) -> None:
    """gap recovered for every distilled row (rows between the scratch student and the teacher);
    undefined (None) when the teacher is not better than the scratch student: there is no gap."""
    scratch, top = results[0]["miou"], results[-1]["miou"]
    for r in results[1:-1]:
        r["gap_recovered"] = (r["miou"] - scratch) / (top - scratch) if top > scratch else None


def write_results(stem: Path, results: list[dict], first_split: str, args: argparse.Namespace, data: Path,
                  teacher: Path) -> None:
    meta = {"epochs": args.epochs, "data": str(data), "teacher": str(teacher), "argv": sys.argv[1:],
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "goal": "gap_recovered >= 0.5"}
    note = ("" if results[-1]["miou"] > results[0]["miou"] else
            "\nThe teacher is not better than the scratch student here, so there is no gap to recover "
            "(gap recovered: n/a).\n")
    write_result(stem, {"meta": meta, "split": first_split, "rows": results},
                 "# Distillation comparison (demo configs, CPU)\n\n"
                 f"`{command('distill_comparison', sys.argv[1:])}`\n\n{table(results, first_split)}\n{note}")


if __name__ == "__main__":
    sys.exit(main())
