"""`mode: linear_eval`: how pretraining variants are compared (the homogeneous-Mars paper, 4.4).

    frozen backbone (init.checkpoint, or random init when none) --pool--> features, computed ONCE
    -> linear classifier (a 128-unit dense layer, then the class layer) trained on the train part
    -> accuracy on the test part

The data is an image-classification folder: `FOLDER/train/<class>/*` and `FOLDER/test/<class>/*`
(`marsedge class-folder` cuts one from a segmentation set). `linear_eval.label_fraction` keeps a
stratified, seeded fraction of the training images (at least one per class), for the paper's
label-fraction study. The classifier has no nonlinearity: the 128-unit layer followed by the class
layer is still one linear map (of rank <= 128), as in the paper's protocol; a BatchNorm without
learnt scale normalises the frozen features first (common linear-probe practice; also linear).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from marsedge.errors import ConfigError
from marsedge.train.class_folder import list_class_folder
from marsedge.train.config import RunConfig, TrainConfig
from marsedge.train.distributed import init_distributed, shutdown_distributed
from marsedge.train.features import extract_features, frames_reader, load_backbone
from marsedge.train.loop import Artifact, build_train_loader, fit

METRICS = ("accuracy", "balanced_accuracy")  # what AccuracyEvaluator returns


@dataclass
class LinearEvalSection:
    folder: str = "data/classes"  # has train/<class>/ and test/<class>/
    label_fraction: float = 1.0  # of the training images, stratified per class
    hidden: int = 128  # the paper's linear-evaluation dimension; 0 = class layer only
    feature_batch_size: int = 64


@dataclass
class LinearEvalConfig(TrainConfig):
    linear_eval: LinearEvalSection = field(default_factory=LinearEvalSection)
    run: RunConfig = field(default_factory=lambda: RunConfig(early_stop_metric="accuracy"))

    def validate(self) -> None:
        super().validate()
        if self.run.early_stop_metric not in METRICS:
            raise ConfigError(f"config key 'run.early_stop_metric' must be one of {list(METRICS)} in "
                              f"linear_eval mode, got {self.run.early_stop_metric!r}")


class LinearClassifier(nn.Module):
    """BatchNorm (no affine) -> Linear(d, hidden) -> Linear(hidden, classes); no nonlinearity."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(in_dim, affine=False)]
        layers += [nn.Linear(in_dim, hidden), nn.Linear(hidden, num_classes)] if hidden else [
            nn.Linear(in_dim, num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def stratified_fraction(targets: list[int], fraction: float, seed: int) -> list[int]:
    """Indices of a seeded `fraction` of each class (at least one image per class)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"config key 'linear_eval.label_fraction' must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    targets_arr = np.asarray(targets)
    keep: list[int] = []
    for c in np.unique(targets_arr):
        members = np.flatnonzero(targets_arr == c)
        n = max(1, int(round(fraction * len(members))))
        keep += rng.choice(members, size=n, replace=False).tolist()
    return sorted(keep)


class FeatureSet(Dataset):
    """Precomputed features and their class: items {"features": float D, "label": long}."""

    def __init__(self, features: np.ndarray, targets: list[int]) -> None:
        self.features = torch.from_numpy(features)
        self.targets = torch.as_tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict:
        return {"features": self.features[index], "label": self.targets[index]}


def classification_objective(model: nn.Module, batch: dict, state) -> tuple[torch.Tensor, dict]:
    logits = model(batch["features"])
    loss = nn.functional.cross_entropy(logits, batch["label"])
    return loss, {"train_acc": float((logits.argmax(1) == batch["label"]).float().mean())}


class AccuracyEvaluator:
    """Test accuracy and balanced accuracy (mean per-class recall) of the classifier."""

    def __init__(self, features: np.ndarray, targets: list[int], num_classes: int) -> None:
        self.features = torch.from_numpy(features)
        self.targets = np.asarray(targets)
        self.num_classes = num_classes

    def __call__(self, model: nn.Module, state) -> dict:
        pred = model(self.features.to(state.device)).argmax(1).cpu().numpy()
        correct = pred == self.targets
        present = [c for c in range(self.num_classes) if (self.targets == c).any()]
        recalls = [correct[self.targets == c].mean() for c in present]
        return {"accuracy": float(correct.mean()), "balanced_accuracy": float(np.mean(recalls))}


def precompute(cfg: LinearEvalConfig, backbone: nn.Module, part: str, device: torch.device,
               classes: list[str] | None = None) -> tuple[np.ndarray, list[int], list[str]]:
    """Features of FOLDER/<part> with the frozen backbone, computed once per run."""
    paths, targets, classes = list_class_folder(Path(cfg.linear_eval.folder) / part, classes)
    feats = extract_features(backbone, len(paths), frames_reader(paths), cfg.data.preprocess,
                             cfg.linear_eval.feature_batch_size, device, progress=f"{part} features")
    return feats, targets, classes


CONFIG = LinearEvalConfig


def run(cfg: LinearEvalConfig, resume: bool = False) -> dict:
    ctx = init_distributed(cfg.run.device)
    try:
        return _run(cfg, ctx, resume)
    finally:
        shutdown_distributed()


def _run(cfg: LinearEvalConfig, ctx, resume: bool) -> dict:
    backbone, _ = load_backbone(cfg.init.checkpoint, cfg.model, cfg.seed)
    train_x, train_y, classes = precompute(cfg, backbone, "train", ctx.device)
    test_x, test_y, _ = precompute(cfg, backbone, "test", ctx.device, classes)
    keep = stratified_fraction(train_y, cfg.linear_eval.label_fraction, cfg.seed)
    train_set = FeatureSet(train_x[keep], [train_y[i] for i in keep])
    torch.manual_seed(cfg.seed)
    model = LinearClassifier(train_x.shape[1], len(classes), cfg.linear_eval.hidden)
    summary = fit(cfg, model, classification_objective, build_train_loader(train_set, cfg, ctx),
                  evaluator=AccuracyEvaluator(test_x, test_y, len(classes)), ctx=ctx, resume=resume,
                  artifact=Artifact(model, cfg.model, cfg.data.preprocess))
    summary.update(classes=classes, train_images=len(train_set), test_images=len(test_y))
    return summary
