"""Mode `classify`: MSL surface image classification, Wang et al.'s semi-supervised scheme (section 4).

    classify.objective: ce            L = CE                                (eq. 4; the baseline)
                        ce_interclass L = CE + lambda_s L_s                 (eq. 2 added)
                        full          L = CE + lambda_s L_s + lambda_u L_u  (eq. 5; lambda_s 1, lambda_u 0.2)

Data: an MSL surface tree (`marsedge.data.msl_surface`: the published v2.1 layout, or
`marsedge data synth-classes`); the class count comes from its class map (model.num_classes is set
from it). Each training item carries the CE image (weak augmentation: `classify.augment`), and for
eq. 2 a pair of strongly augmented views of two images of one class (`classify.views`), for eq. 3
two views of one unlabelled image (`classify.unlabelled`: a folder or glob; none: the training images
without their labels). The backbone runs once per step on all streams concatenated.

Selection and scoring: the published `val` split picks best.pt (`run.early_stop_metric: top1`)
and early stopping; `test` is scored once at the end with best.pt (test_metrics.json, and the
test top-1 and per-class recall printed). Starting weights: `init.checkpoint` (a pretraining or
classify checkpoint: its `backbone.*`).

Departures from the paper, on purpose: one batch size for the three streams (the paper: 16 for CE
and eq. 3, 24 for eq. 2) and class-uniform eq. 2 pairs in expectation (not exactly one per class
per batch: the loop's sampler picks the indices); one learning rate for all parameters (the
paper: 1e-3 for the classifier, 1e-6 for the backbone and MLP heads, which assumes a MoCo v2
ImageNet start; the loop's optimiser has one lr) and its schedules (poly/cosine, not steps at 20/25).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from marsedge.data.frames import list_frames
from marsedge.data.msl_surface import MSLSurfaceDataset
from marsedge.data.preprocess import PreprocessSpec
from marsedge.data.views import ContrastiveViewConfig
from marsedge.errors import ConfigError, DataError
from marsedge.models.build import ModelConfig
from marsedge.models.classifier import CLASSIFIER_HEAD, build_classifier
from marsedge.ssl.classification_losses import SemiSupervisedClassificationLoss
from marsedge.terrain import named_class_table
from marsedge.train.classification import (
    METRICS,
    SemiSupervisedImages,
    format_test,
    image_evaluator,
)
from marsedge.train.config import DataConfig, RunConfig, TrainConfig
from marsedge.train.engine.job import FitPlan, Job, register_mode
from marsedge.train.engine.state import Artifact
from marsedge.train.modes.linear_eval import stratified_fraction
from marsedge.train.supervised import initialise

# objective -> (eq. 2 on, eq. 3 on)
OBJECTIVES: dict[str, tuple[bool, bool]] = {
    "ce": (False, False),
    "ce_interclass": (True, False),
    "full": (True, True),
}


def _weak() -> ContrastiveViewConfig:
    """The CE stream's augmentation: crop, flip, mild jitter (the paper: strong augmentation hurts CE)."""
    return ContrastiveViewConfig(
        crop_scale=(0.6, 1.0),
        jitter_prob=0.5,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        grey_prob=0.0,
        blur_prob=0.0,
    )


@dataclass
class ClassifySection:
    root: str = "data/msl_classes"  # holds msl-labeled-data-set-v2.1/ (or is it)
    objective: Literal["ce", "ce_interclass", "full"] = "full"
    lambda_s: float = 1.0
    lambda_u: float = 0.2
    temperature: float = 0.2  # of eq. 2
    head_dim: int = 128  # output of the 2-layer MLP heads
    balanced_pairs: bool = True  # eq. 2 pairs drawn class-uniform (False: image i's class)
    unlabelled: str | None = None  # folder or glob of unlabelled images (None: the training images)
    label_fraction: float = 1.0  # of the training labels, stratified per class
    augment: ContrastiveViewConfig = field(default_factory=_weak)
    views: ContrastiveViewConfig = field(default_factory=ContrastiveViewConfig)  # eq. 2 / eq. 3 views


@dataclass
class ClassifyConfig(TrainConfig):
    classify: ClassifySection = field(default_factory=ClassifySection)
    data: DataConfig = field(
        default_factory=lambda: DataConfig(preprocess=PreprocessSpec(224, 224, 3, gain=1.0))
    )
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(
            backbone="r50_1x_sk0", head=CLASSIFIER_HEAD, output_stride=32, in_channels=3
        )
    )
    run: RunConfig = field(default_factory=lambda: RunConfig(early_stop_metric="top1"))

    def validate(self) -> None:
        super().validate()
        classification_defaults(self)
        if self.model.head != CLASSIFIER_HEAD:
            raise ConfigError(
                f"config key 'model.head' must be {CLASSIFIER_HEAD!r} in {self.mode} mode, "
                f"got {self.model.head!r}"
            )
        if self.classify.temperature <= 0:
            raise ConfigError(
                f"config key 'classify.temperature' must be positive, got {self.classify.temperature}"
            )
        if self.classify.lambda_s < 0 or self.classify.lambda_u < 0:
            raise ConfigError("config keys 'classify.lambda_s'/'classify.lambda_u' must be >= 0")


def classification_defaults(cfg: TrainConfig) -> None:
    """A YAML `run:` or `model:` section starts from the segmentation defaults (early stop on miou,
    a deeplabv3plus head), which mean nothing here: they become top1 and the classifier head; any
    other early-stop metric must be a classification one."""
    if cfg.run.early_stop_metric == RunConfig().early_stop_metric:
        cfg.run.early_stop_metric = "top1"
    if cfg.model.head == ModelConfig().head:
        cfg.model.head = CLASSIFIER_HEAD
    if cfg.run.early_stop_metric not in METRICS:
        raise ConfigError(
            f"config key 'run.early_stop_metric' must be one of {list(METRICS)} in "
            f"{cfg.mode} mode, got {cfg.run.early_stop_metric!r}"
        )


class ClassifyObjective:
    """Eq. 5 on one batch: one backbone pass over [CE images | eq. 2 views | eq. 3 views]."""

    def __init__(self, loss: SemiSupervisedClassificationLoss, pairs: bool, unlabelled: bool) -> None:
        self.loss, self.pairs, self.unlabelled = loss, pairs, unlabelled

    def __call__(self, model: nn.Module, batch: dict, state) -> tuple[torch.Tensor, dict]:
        parts = [batch["image"]]
        n_s = batch["s_view1"].shape[0] if self.pairs else 0
        n_u = batch["u_view1"].shape[0] if self.unlabelled else 0
        if n_s:
            parts += [batch["s_view1"], batch["s_view2"]]
        if n_u:
            parts += [batch["u_view1"], batch["u_view2"]]
        out = model(torch.cat(parts), batch["image"].shape[0], n_s, n_u, method="forward_streams")
        s_views = (out["z_s"][:n_s], out["z_s"][n_s:], batch["s_label"]) if n_s else None
        u_views = (out["z_u"][:n_u], out["z_u"][n_u:]) if n_u else None
        total, terms = self.loss(out["logits"], batch["label"], s_views, u_views)
        with torch.no_grad():
            acc = (out["logits"].argmax(1) == batch["label"]).float().mean()
        return total, {**{k: float(v) for k, v in terms.items()}, "train_acc": float(acc)}


@register_mode("classify", ClassifyConfig)
class Classify(Job):
    cfg: ClassifyConfig

    def prepare(self) -> None:
        cfg, sec = self.cfg, self.cfg.classify
        train = MSLSurfaceDataset(sec.root, "train")
        val, test = MSLSurfaceDataset(sec.root, "val"), MSLSurfaceDataset(sec.root, "test")
        self.classes = train.classes
        cfg.model.num_classes = len(self.classes)  # from the class map: 19 in v2.1, 24 earlier
        keep = (
            stratified_fraction(train.targets, sec.label_fraction, cfg.seed, "classify.label_fraction")
            if sec.label_fraction < 1
            else range(len(train))
        )
        items = [train.items[i] for i in keep]
        if cfg.data.max_train is not None:
            items = items[: cfg.data.max_train]
        self.pairs, use_u = OBJECTIVES[sec.objective]
        unlabelled = []
        if use_u:
            unlabelled = list_frames(sec.unlabelled) if sec.unlabelled else [it.path for it in train.items]
            if not unlabelled:
                raise DataError(f"config key 'classify.unlabelled': no images in {sec.unlabelled}")
        self.unlabelled = unlabelled
        spec = cfg.data.preprocess
        self.train_set = SemiSupervisedImages(
            items, spec, sec.augment, sec.views, cfg.seed, self.pairs, sec.balanced_pairs, unlabelled
        )
        batch = cfg.data.eval_batch_size
        self.evaluator = image_evaluator(val.items, self.classes, spec, batch, "val")
        self.test_items = test.items
        self.test_evaluator = image_evaluator(test.items, self.classes, spec, batch, "test")

    def build(self) -> FitPlan:
        cfg, sec = self.cfg, self.cfg.classify
        heads = ("s",) * self.pairs + ("u",) * bool(self.unlabelled)
        self.model = build_classifier(cfg.model, heads, sec.head_dim)
        self.origin = initialise(self.model, cfg.init)  # the segmentation modes' loader: same checks
        loss = SemiSupervisedClassificationLoss(
            sec.lambda_s if self.pairs else 0.0, sec.lambda_u if self.unlabelled else 0.0, sec.temperature
        )
        return FitPlan(
            self.model,
            ClassifyObjective(loss, self.pairs, bool(self.unlabelled)),
            self.train_set,
            self.evaluator,
            self.test_evaluator,
            # the checkpoint names the dataset's classes, not the terrain classes of segmentation
            artifact=Artifact(self.model, cfg.model, cfg.data.preprocess, named_class_table(self.classes)),
        )

    def banner(self) -> str:
        cfg, sec = self.cfg, self.cfg.classify
        return (
            f"{sec.objective}: {cfg.model.backbone} classifier, {len(self.classes)} classes, "
            f"{self.origin}; {len(self.train_set)} labelled training images, "
            f"{len(self.unlabelled)} unlabelled, {len(self.evaluator.targets)} val, {len(self.test_items)} "
            f"test; {self.ctx.world_size} process(es) on {self.ctx.device}"
        )

    def finish(self, summary: dict) -> dict:
        summary.update(classes=self.classes, objective=self.cfg.classify.objective)
        return print_test(self.cfg, self.ctx, summary)


def print_test(cfg: TrainConfig, ctx, summary: dict) -> dict:
    """Rank 0 prints the loop's one test scoring (best.pt on the test split): top-1, per-class recall."""
    if ctx.is_main and summary.get("test_metrics"):
        print(f"[{cfg.name}] {format_test(summary['test_metrics'])}")
    return summary
