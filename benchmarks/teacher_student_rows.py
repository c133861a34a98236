"""The configs of `benchmarks.teacher_student`'s rows: the models, data, recipes and schedules, and
the frames each seed may see without labels. Each function returns one run's config for train.py's
modes (`marsedge.train.config`); the benchmark runs them."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

TEST = "gold-min3"
STUDENT = {"backbone": "mnv2_0.35", "head": "deeplabv3plus", "separable": True, "head_channels": 32,
           "output_stride": 16, "num_classes": 6, "in_channels": 1}
# DeepLabv3+ like the student: at 128 px, DeepLabv3's output stride 16 leaves an 8 x 8 logit map,
# which the student's stride-4 decoder beats on every boundary whatever the backbone
TEACHER = {"backbone": "r18_1x_sk0", "head": "deeplabv3plus", "head_channels": 64, "output_stride": 16,
           "num_classes": 6, "in_channels": 1}
PREPROCESS = {"height": 128, "width": 128, "channels": 1, "gain": 1.5}
# SimCLR's views are random resized crops; at 64 px they cost a quarter of full frames, so the
# pretraining can run 4x the epochs for the same CPU (the backbone is fully convolutional)
PRETRAIN_VIEW = {**PREPROCESS, "height": 64, "width": 64}
AUGMENT = {"hflip": 0.5, "scale": [0.8, 1.25], "brightness": 0.1, "contrast": 0.2}
OPTIM = {"name": "adamw", "lr": 0.004, "weight_decay": 1e-4, "schedule": "poly", "warmup_epochs": 0.5}
# The teacher rows' own recipes (--teacher-recipe): what each changes in the student's. A 23x model on
# 72 labelled frames overfits (train loss 0.13 against the student's 0.35 where they stop), so the
# levers are a lower learning rate, weight decay and stronger scale augmentation.
TEACHER_RECIPES = {
    "default": {},
    "lr0.001": {"optim": {"lr": 0.001}},
    "lr0.001_wd0.05": {"optim": {"lr": 0.001, "weight_decay": 0.05}},
    "lr0.001_wd0.05_scale0.5-2": {"optim": {"lr": 0.001, "weight_decay": 0.05},
                                  "augment": {"scale": [0.5, 2.0]}},
}


# ---- the rows' configs ----------------------------------------------------------------------


def data_section(root: Path, fraction: float) -> dict:
    return {"root": str(root), "train_splits": ["train"], "val_fraction": 0.1, "val_seed": 0,
            "label_fraction": fraction, "test_splits": [TEST], "preprocess": PREPROCESS,
            "augment": AUGMENT, "eval_batch_size": 32}


def labelled_frames(root: Path, fraction: float, seed: int) -> int:
    from marsedge.config import from_dict
    from marsedge.train.config import DataConfig
    from marsedge.train.supervised import training_set

    return len(training_set(from_dict(DataConfig, data_section(root, fraction)), seed))


def schedule(frames: int, args: argparse.Namespace, batch: int = 8) -> dict:
    """Batch, epoch cap and val cadence for batches of `batch` drawn from `frames` frames (an epoch is
    a pass over them): an evaluation every ~eval_steps optimiser steps, early stopping after
    `patience` evaluations without a new best; under --ema an average of the weights beside them."""
    batch = min(batch, frames)
    per_epoch = frames // batch
    # a loader worker is re-forked every epoch (datasets take their augmentation epoch that way): at a
    # step or two per epoch that costs more than it saves, so the smallest sets load in-process
    return {"epochs": math.ceil(args.max_steps / per_epoch), "batch_size": batch,
            "num_workers": 0 if per_epoch < 4 else 1,
            "run": {"eval_every": max(1, round(args.eval_steps / per_epoch)), "early_stop_metric": "miou",
                    "early_stop_patience": args.patience,
                    **({} if args.ema is None else {"ema": args.ema})}}


def supervised(root: Path, model: dict, fraction: float, seed: int, args, init: Path | None,
               recipe: str = "default") -> dict:
    """A finetune run; `recipe` (a TEACHER_RECIPES key) changes the optimiser and augmentation."""
    change = TEACHER_RECIPES[recipe]
    data = data_section(root, fraction)
    data["augment"] = {**data["augment"], **change.get("augment", {})}
    config = {"mode": "finetune", "seed": seed, "model": model, "data": data,
              "optim": {**OPTIM, **change.get("optim", {})}, "loss": {"name": "ce"},
              **schedule(labelled_frames(root, fraction, seed), args)}
    if init is not None:
        config["init"] = {"checkpoint": str(init), "backbone_only": True}
    return config


def distilled(root: Path, teacher: Path, pool: Path | None, fraction: float, seed: int, args,
              temperature: float) -> dict:
    """The student distilled from `teacher` (same schedule as scratch); without a pool of unlabelled
    frames, the sanity row: the labelled frames only, KD alone."""
    config = supervised(root, STUDENT, fraction, seed, args, None)
    section = {"teacher": str(teacher), "gt_weight": 1.0,
               "terms": {"kd": {"weight": 1.0, "temperature": temperature}},
               "sampling": "balanced", "unlabelled_per_labelled": 1}
    if pool is None:
        section["gt_weight"] = 0.0
    else:
        section["unlabelled"] = [{"root": str(root), "split": "unlabelled"},
                                 {"root": str(pool), "kind": "folder"}]
    return {**config, "mode": "distill", "distill": section}


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


def pretrain_config(work: Path, root: Path, seed: int, epochs: int, objective: str = "simclr") -> dict:
    """The pretraining run: SimCLR (or DenseCL: `objective`) of the teacher's backbone on every train
    frame but val's + the unlabelled split, with a nearest-centroid probe of its features on val (64
    labelled train frames, full size) every 4 epochs: whether the features improve shows in the run's
    metrics.jsonl and in bench.json."""
    pool = unlabelled_pool(root, None, seed, work / f"pool_s{seed}_pretrain")
    sources = [{"root": str(root), "split": "unlabelled"}, {"root": str(pool), "kind": "folder"}]
    # DenseCL contrasts locations: at output stride 32 a 64 px view is a 2 x 2 map, at 16 (the
    # finetuned teacher's own dilation, so the same weights) 4 x 4
    dense = objective == "densecl"
    model = {k: TEACHER[k] for k in ("backbone", "in_channels")} | {"output_stride": 16 if dense else 32}
    config = {"mode": "pretrain", "seed": seed, "epochs": epochs, "batch_size": 64, "model": model,
              "data": {"root": str(root), "preprocess": PRETRAIN_VIEW, "val_fraction": 0.1, "val_seed": 0},
              "optim": {"name": "lars", "lr": 0.6, "weight_decay": 1e-6, "schedule": "cosine",
                        "warmup_epochs": 1},
              "pretrain": {"temperature": 0.5, "sources": sources,
                           **({"objective": "densecl"} if dense else {}),
                           "probe": {"frames": 64, **{k: PREPROCESS[k] for k in ("height", "width")}}},
              "run": {"eval_every": 4}}
    return config
