"""What the image-classification modes share (`classify`, `classify_linear`): metrics, the
evaluator, the semi-supervised training set and the final test scoring.

Protocol (design.md, "Evaluation protocol"): the published `val` split picks the checkpoint
(best.pt on `top1`, early stopping), and the `test` split is scored once, at the end, with that
checkpoint by the loop (`FitPlan.test_evaluator`): `test_metrics.json` in the run folder holds
top-1, top-5, balanced accuracy, per-class recall and support and the confusion matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from marsedge.data.frames import read_frame
from marsedge.data.msl_surface import ClassItem
from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.data.views import ContrastiveViewConfig, contrastive_view
from marsedge.metrics import classification_metrics

METRICS = ("top1", "top5", "balanced_accuracy")  # the scalars ClassificationEvaluator returns


class ClassificationEvaluator:
    """Scores a model on one split's fixed inputs (preprocessed images, or features), computed once.

    `__call__(model, state)` returns `top1`, `top5`, `balanced_accuracy` and `recall` (a dict by
    class name); on the test split (scored once, at the end) also `support` and `confusion`. Every
    rank scores the whole set, so the result is the same everywhere. `splits` tells the loop which
    split it reads (a test split cannot drive selection)."""

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: Sequence[int],
        classes: Sequence[str],
        batch_size: int = 64,
        split: str = "val",
    ) -> None:
        self.inputs, self.targets, self.classes = inputs, list(targets), list(classes)
        self.batch_size, self.splits = batch_size, [split]

    @torch.no_grad()
    def logits(self, model: nn.Module, device: torch.device) -> np.ndarray:
        out = [
            model(self.inputs[i : i + self.batch_size].to(device).float()).float().cpu()
            for i in range(0, len(self.inputs), self.batch_size)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)

    def __call__(self, model: nn.Module, state) -> dict:
        m = classification_metrics(self.logits(model, state.device), self.targets, self.classes)
        if self.splits != ["test"]:
            del m["support"], m["confusion"]
        return m


def preprocess_items(items: Sequence[ClassItem], spec: PreprocessSpec) -> torch.Tensor:
    """The un-augmented model inputs of a split, N x C x H x W (float16 to halve the memory)."""
    if not items:
        return torch.zeros((0, spec.channels, spec.height, spec.width), dtype=torch.float16)
    return torch.from_numpy(np.stack([preprocess(read_frame(it.path), spec) for it in items])).half()


def image_evaluator(
    items: Sequence[ClassItem],
    classes: Sequence[str],
    spec: PreprocessSpec,
    batch_size: int,
    split: str = "val",
) -> ClassificationEvaluator:
    return ClassificationEvaluator(
        preprocess_items(items, spec), [it.target for it in items], classes, batch_size, split
    )


def format_test(metrics: dict) -> str:
    """`test top-1 0.8123, top-5 ..., balanced accuracy ...; recall: wheel 0.95 (n=40), ...`"""
    recall = ", ".join(
        f"{name} {'-' if math.isnan(r) else f'{r:.2f}'} (n={metrics['support'][name]})"
        for name, r in metrics["recall"].items()
    )
    return (
        f"test top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}, balanced accuracy "
        f"{metrics['balanced_accuracy']:.4f}; per-class recall: {recall}"
    )


class SemiSupervisedImages(Dataset):
    """Training items for `classify`: {"image", "label"} (the CE stream, weak augmentation), plus
    {"s_view1", "s_view2", "s_label"} (eq. 2: views of two images of one class) and {"u_view1",
    "u_view2"} (eq. 3: two views of one unlabelled image) when those streams are on.

    Eq. 2 pairs: with `balanced`, item i draws its class uniformly over the training classes (the
    paper controls its batches "to equally cover all classes"; here in expectation, since the
    loop's sampler picks the indices), else it takes image i's class; the pair is two images of
    that class (the same image twice only when the class has one). Randomness comes from (seed,
    epoch, index), so it does not depend on workers, ranks or resume points.
    """

    def __init__(
        self,
        items: Sequence[ClassItem],
        spec: PreprocessSpec,
        weak: ContrastiveViewConfig,
        strong: ContrastiveViewConfig,
        seed: int,
        pairs: bool = False,
        balanced: bool = True,
        unlabelled: Sequence[Path] = (),
    ) -> None:
        self.items, self.spec, self.weak, self.strong, self.seed = list(items), spec, weak, strong, seed
        self.pairs, self.balanced, self.unlabelled = pairs, balanced, list(unlabelled)
        targets = np.asarray([it.target for it in self.items])
        self.members = {int(c): np.flatnonzero(targets == c) for c in np.unique(targets)}
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _view(self, path: Path, cfg: ContrastiveViewConfig, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(contrastive_view(read_frame(path), self.spec, cfg, rng))

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        item = self.items[index]
        out = {"image": self._view(item.path, self.weak, rng), "label": torch.tensor(item.target)}
        if self.pairs:
            classes = list(self.members)
            c = classes[int(rng.integers(len(classes)))] if self.balanced else item.target
            members = self.members[c]
            a = int(rng.choice(members)) if self.balanced else index
            others = members[members != a]
            b = int(rng.choice(others)) if len(others) else a
            out.update(
                s_view1=self._view(self.items[a].path, self.strong, rng),
                s_view2=self._view(self.items[b].path, self.strong, rng),
                s_label=torch.tensor(c),
            )
        if self.unlabelled:
            path = self.unlabelled[int(rng.integers(len(self.unlabelled)))]
            out.update(u_view1=self._view(path, self.strong, rng), u_view2=self._view(path, self.strong, rng))
        return out
