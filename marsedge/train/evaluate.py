"""Evaluation on the gold test set(s): one confusion matrix per set, summed over ranks, then every
metric of `marsedge.metrics` and a confusion-matrix PNG per set.

The result dict has the first test set's scalars unprefixed (`miou`, `pixel_accuracy`, ...: what
early stopping watches by default) and every set's metrics under `<split>/<metric>`, per-class
dicts included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from marsedge.metrics import plot_confusion, segmentation_metrics
from marsedge.terrain import CLASS_NAMES, IGNORE_INDEX
from marsedge.train.distributed import DistContext, ShardSampler, all_reduce_sum


def build_eval_loader(dataset: Dataset, batch_size: int, ctx: DistContext, num_workers: int = 0,
                      collate_fn=None) -> DataLoader:
    """Each rank reads a disjoint share of the test set (no padding: no pixel counted twice)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      sampler=ShardSampler(len(dataset), ctx.world_size, ctx.rank),
                      collate_fn=collate_fn, pin_memory=ctx.device.type == "cuda")


@torch.no_grad()
def confusion_matrix(model: nn.Module, loader: DataLoader, num_classes: int, ctx: DistContext,
                     channels_last: bool = False) -> np.ndarray:
    """The KxK (truth x prediction) pixel counts of `model` on `loader`, summed over all ranks."""
    k = num_classes
    counts = torch.zeros(k * k, dtype=torch.int64, device=ctx.device)
    for batch in loader:
        image = batch["image"].to(ctx.device, non_blocking=True)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        target = batch["label"].to(ctx.device, non_blocking=True)
        pred = model(image).argmax(dim=1)
        keep = target != IGNORE_INDEX
        counts += torch.bincount(target[keep] * k + pred[keep], minlength=k * k)
    all_reduce_sum(counts, ctx)
    return counts.reshape(k, k).cpu().numpy()


class SegmentationEvaluator:
    """`evaluator(model, state) -> dict` for the training loop (see marsedge.train.loop)."""

    def __init__(self, loaders: dict[str, DataLoader], num_classes: int, confusion_png: bool = True) -> None:
        if not loaders:
            raise ValueError("SegmentationEvaluator needs at least one test loader")
        self.loaders = loaders
        self.num_classes = num_classes
        self.confusion_png = confusion_png
        self.class_names = list(CLASS_NAMES[:num_classes])

    def __call__(self, model: nn.Module, state) -> dict:
        result: dict = {}
        for i, (split, loader) in enumerate(self.loaders.items()):
            matrix = confusion_matrix(model, loader, self.num_classes, state.ctx, state.cfg.run.channels_last)
            metrics = segmentation_metrics(matrix, self.class_names)
            if i == 0:
                result.update({k: v for k, v in metrics.items() if not isinstance(v, dict)})
            result.update({f"{split}/{k}": v for k, v in metrics.items()})
            if self.confusion_png and state.ctx.is_main:
                plot_confusion(matrix, Path(state.run_dir) / f"confusion_{split}.png", self.class_names,
                               title=f"{split}, epoch {state.epoch + 1}")
        return result
