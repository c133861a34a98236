"""Mode `classify_linear`: Ward et al.'s linear evaluation (section 4.4, 6.1) on the MSL surface dataset.

    frozen backbone (init.checkpoint: a `pretrain` SimCLR / mixed-domain / cluster-aware run, or a
    classify run; none: a seeded random init) --global pool--> features of train/val/test, ONCE
    -> linear layer (128 units then the class layer, no nonlinearity: `linear_eval.LinearClassifier`)
       trained on `classify_linear.label_fraction` of the training labels (0.1 / 0.25 / 0.5 / 1.0,
       stratified per class, at least one image per class)
    -> best epoch on val top-1; test top-1 (and per-class recall) once, at the end: test_metrics.json

The checkpoint's own preprocessing spec prepares the images (what the backbone was trained on);
without a checkpoint, `data.preprocess`. `benchmarks/classification.py` runs it for each
pretraining mode and label fraction (the paper's fig. 4 curve).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from marsedge.data.msl_surface import MSLSurfaceDataset
from marsedge.ssl.features import extract_features, frames_reader, load_backbone
from marsedge.train.classification import ClassificationEvaluator
from marsedge.train.config import RunConfig, TrainConfig
from marsedge.train.engine.job import FitPlan, Job, register_mode
from marsedge.train.modes.classify import classification_defaults, print_test
from marsedge.train.modes.linear_eval import (
    FeatureSet,
    LinearClassifier,
    classification_objective,
    stratified_fraction,
)


@dataclass
class ClassifyLinearSection:
    root: str = "data/msl_classes"  # holds msl-labeled-data-set-v2.1/ (or is it)
    label_fraction: float = 1.0  # of the training labels, stratified per class
    hidden: int = 128  # the paper's 128-neuron linear layer; 0 = the class layer only
    feature_batch_size: int = 64


@dataclass
class ClassifyLinearConfig(TrainConfig):
    classify_linear: ClassifyLinearSection = field(default_factory=ClassifyLinearSection)
    run: RunConfig = field(default_factory=lambda: RunConfig(early_stop_metric="top1"))

    def validate(self) -> None:
        super().validate()
        classification_defaults(self)


@register_mode("classify_linear", ClassifyLinearConfig)
class ClassifyLinear(Job):
    cfg: ClassifyLinearConfig

    def prepare(self) -> None:
        cfg, sec = self.cfg, self.cfg.classify_linear
        self.splits = {s: MSLSurfaceDataset(sec.root, s) for s in ("train", "val", "test")}
        self.classes = self.splits["train"].classes
        feats = {s: self.features(s) for s in self.splits}
        targets = {s: ds.targets for s, ds in self.splits.items()}
        keep = stratified_fraction(targets["train"], sec.label_fraction, cfg.seed,
                                   "classify_linear.label_fraction")
        self.train_set = FeatureSet(feats["train"][keep], [targets["train"][i] for i in keep])
        self.evaluator = ClassificationEvaluator(torch.from_numpy(feats["val"]), targets["val"], self.classes)
        self.test_evaluator = ClassificationEvaluator(
            torch.from_numpy(feats["test"]), targets["test"], self.classes, split="test"
        )

    def features(self, split: str) -> np.ndarray:
        """Frozen-backbone features of one split (N x D), computed once per run."""
        if not hasattr(self, "backbone"):
            cfg = self.cfg
            self.backbone, spec = load_backbone(cfg.init.checkpoint, cfg.model, cfg.seed)
            self.spec = spec or cfg.data.preprocess
        paths = [it.path for it in self.splits[split].items]
        return extract_features(
            self.backbone,
            len(paths),
            frames_reader(paths),
            self.spec,
            self.cfg.classify_linear.feature_batch_size,
            self.ctx.device,
            progress=f"{split} features",
        )

    def build(self) -> FitPlan:
        self.model = LinearClassifier(
            self.train_set.features.shape[1], len(self.classes), self.cfg.classify_linear.hidden
        )
        return FitPlan(
            self.model, classification_objective, self.train_set, self.evaluator, self.test_evaluator
        )

    def banner(self) -> str:
        cfg = self.cfg
        return (
            f"linear evaluation of {cfg.init.checkpoint or 'a random ' + cfg.model.backbone}: "
            f"{len(self.train_set)} training labels ({cfg.classify_linear.label_fraction:g}), "
            f"{len(self.classes)} classes, {self.train_set.features.shape[1]}-d features"
        )

    def finish(self, summary: dict) -> dict:
        summary.update(
            classes=self.classes,
            train_images=len(self.train_set),
            label_fraction=self.cfg.classify_linear.label_fraction,
        )
        return print_test(self.cfg, self.ctx, summary)
