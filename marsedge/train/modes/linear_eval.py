"""Mode `linear_eval`: how pretraining variants are compared (the homogeneous-Mars paper, 4.4).

    frozen backbone (init.checkpoint, or random init when none) --pool--> features, computed ONCE
    -> linear classifier (a 128-unit dense layer, then the class layer) trained on the train part
       minus `val` (data.val_fraction of it, whole spacecraft-clock groups: all crops of a frame,
       and the frames of one drive, on one side), best.pt and early stopping chosen on val accuracy
    -> accuracy on the test part, once, with the selected classifier (test_metrics.json)

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

from marsedge.data.sampling import validation_split
from marsedge.errors import ConfigError
from marsedge.ssl.class_folder import list_class_folder
from marsedge.ssl.features import extract_features, frames_reader, load_backbone
from marsedge.train.config import RunConfig, TrainConfig
from marsedge.train.engine.job import FitPlan, Job, register_mode

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


def stratified_fraction(targets: list[int], fraction: float, seed: int,
                        key: str = "linear_eval.label_fraction") -> list[int]:
    """Indices of a seeded `fraction` of each class (at least one image per class); `key` is the
    config key the fraction came from, for the error."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"config key '{key}' must be in (0, 1], got {fraction}")
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
    """Accuracy and balanced accuracy (mean per-class recall) of the classifier on one split's
    features (`split`: "val" during training, "test" once at the end)."""

    def __init__(self, features: np.ndarray, targets: list[int], num_classes: int,
                 split: str = "val") -> None:
        self.features = torch.from_numpy(features)
        self.targets = np.asarray(targets)
        self.num_classes = num_classes
        self.splits = [split]

    def __call__(self, model: nn.Module, state) -> dict:
        pred = model(self.features.to(state.device)).argmax(1).cpu().numpy()
        correct = pred == self.targets
        present = [c for c in range(self.num_classes) if (self.targets == c).any()]
        recalls = [correct[self.targets == c].mean() for c in present]
        return {"accuracy": float(correct.mean()), "balanced_accuracy": float(np.mean(recalls))}


def precompute(cfg: LinearEvalConfig, backbone: nn.Module, part: str, device: torch.device,
               classes: list[str] | None = None) -> tuple[np.ndarray, list[int], list[str], list[Path]]:
    """Features of FOLDER/<part> with the frozen backbone, computed once per run (and the paths)."""
    paths, targets, classes = list_class_folder(Path(cfg.linear_eval.folder) / part, classes)
    feats = extract_features(backbone, len(paths), frames_reader(paths), cfg.data.preprocess,
                             cfg.linear_eval.feature_batch_size, device, progress=f"{part} features")
    return feats, targets, classes, [Path(p) for p in paths]


@dataclass(frozen=True)
class _Crop:
    """What validation_split groups: a crop's name (`<frame>_<row>_<col>`, so its frame's clock)."""

    name: str
    index: int
    mission: str = "crops"


def split_val(paths: list[Path], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices of the training crops, grouped by their frame's spacecraft clock."""
    train, val = validation_split([_Crop(p.stem, i) for i, p in enumerate(paths)], fraction, seed)
    return [c.index for c in train], [c.index for c in val]


@register_mode("linear_eval", LinearEvalConfig)
class LinearEval(Job):
    cfg: LinearEvalConfig

    def prepare(self) -> None:
        cfg, device = self.cfg, self.ctx.device
        backbone, _ = load_backbone(cfg.init.checkpoint, cfg.model, cfg.seed)
        train_x, train_y, self.classes, paths = precompute(cfg, backbone, "train", device)
        test_x, self.test_y, _, _ = precompute(cfg, backbone, "test", device, self.classes)
        val_seed = cfg.seed if cfg.data.val_seed is None else cfg.data.val_seed
        rest, val = split_val(paths, cfg.data.val_fraction, val_seed)
        fraction = stratified_fraction([train_y[i] for i in rest], cfg.linear_eval.label_fraction, cfg.seed)
        keep = [rest[j] for j in fraction]
        self.train_set = FeatureSet(train_x[keep], [train_y[i] for i in keep])
        self.val_images = len(val)
        self.evaluator = (AccuracyEvaluator(train_x[val], [train_y[i] for i in val], len(self.classes))
                          if val else None)
        self.test_evaluator = AccuracyEvaluator(test_x, self.test_y, len(self.classes), split="test")

    def build(self) -> FitPlan:
        dim = self.train_set.features.shape[1]
        model = LinearClassifier(dim, len(self.classes), self.cfg.linear_eval.hidden)
        return FitPlan(model, classification_objective, self.train_set, self.evaluator, self.test_evaluator)

    def finish(self, summary: dict) -> dict:
        summary.update(classes=self.classes, train_images=len(self.train_set), val_images=self.val_images,
                       test_images=len(self.test_y))
        return summary
