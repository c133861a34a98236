"""Mode `semisup`: semi-supervised segmentation (the semi-supervised Mars paper, sections 5 and 7.1).

`SemisupObjective` adds `weight` (0.001) x the element-wise contrastive term (marsedge.ssl.elementwise:
memory bank of class prototypes, pseudo labels) to cross-entropy, following the three-stage schedule
in the config (contrastive only, joint, joint + pseudo labels). Pseudo labels join the contrastive
term only, never the CE term. The mode trains `SemisupModel` (the segmentation model plus a
contrastive head of its own, `semisup.contrastive_head`: marsedge.ssl.embedding_heads); the memory
bank is checkpointed with the run, and best.pt is a plain segmentation model. Frames of
`semisup.unlabelled_split` (of data.root) join the labelled ones with an all-ignore label, so CE
skips them. best.pt and early stopping are chosen on `val`; the test splits are scored
once at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from marsedge.data.frame_sources import split_frames, without_held_out
from marsedge.errors import ConfigError
from marsedge.models.build import build_model
from marsedge.ssl.elementwise import (
    ClassMemoryBank,
    ElementwiseContrastiveLoss,
    downsample_labels,
    pseudo_labels,
)
from marsedge.ssl.embedding_heads import build_contrastive_head
from marsedge.terrain import IGNORE_INDEX
from marsedge.train.config import TrainConfig
from marsedge.train.engine.job import FitPlan, Job, register_mode
from marsedge.train.engine.state import Artifact
from marsedge.train.supervised import (
    LabelledThenUnlabelled,
    SegmentationFrames,
    UnlabelledFrames,
    build_evaluator,
    build_loss_for,
    build_test_evaluator,
    held_out_files,
    initialise,
    training_set,
)


@dataclass
class StageConfig:
    """One stage of the schedule: which terms are on, for how many epochs."""

    name: str = "joint"
    epochs: int = 60
    ce: bool = True  # cross-entropy on real labels
    contrastive_weight: float = 0.001  # lambda of the element-wise contrastive term (0 = off)
    pseudo: bool = False  # confident predictions join the contrastive term


def _paper_stages() -> list[StageConfig]:
    """Section 7.1: 60 epochs contrastive alone, 60 joint, 60 joint with pseudo labels."""
    return [StageConfig("contrastive", 60, ce=False, contrastive_weight=1.0),
            StageConfig("joint", 60, ce=True, contrastive_weight=0.001),
            StageConfig("pseudo", 60, ce=True, contrastive_weight=0.001, pseudo=True)]


@dataclass
class SemisupSection:
    temperature: float = 0.07
    queue_length: int = 32
    embed_dim: int = 128  # output channels of the contrastive head
    # independent_v3plus: the paper's own DeepLabv3+ head, stride 4; projection_1x1: 1x1 MLP on `out`
    contrastive_head: Literal["independent_v3plus", "projection_1x1"] = "independent_v3plus"
    pseudo_threshold: float = 0.9
    unlabelled_split: str | None = None  # also train on these frames (CE ignores them), e.g. "unlabelled"
    max_unlabelled: int | None = None
    stages: list[StageConfig] = field(default_factory=_paper_stages)


@dataclass
class SemisupConfig(TrainConfig):
    semisup: SemisupSection = field(default_factory=SemisupSection)

    def validate(self) -> None:
        """The schedule adds up to `epochs` and every stage trains something."""
        super().validate()
        stages = self.semisup.stages
        if not stages:
            raise ConfigError("config key 'semisup.stages' must list at least one stage")
        total = sum(s.epochs for s in stages)
        if total != self.epochs:
            raise ConfigError(f"config key 'epochs' is {self.epochs} but 'semisup.stages' add up to {total}")
        for i, s in enumerate(stages):
            if not s.ce and not s.contrastive_weight:
                raise ConfigError(f"config key 'semisup.stages[{i}]' ({s.name}): turns every loss term off")
            if s.pseudo and not s.contrastive_weight:
                raise ConfigError(f"config key 'semisup.stages[{i}]' ({s.name}): pseudo labels feed the "
                                  "contrastive term, whose weight is 0")


class SemisupModel(nn.Module):
    """A segmentation model plus a contrastive head on the shared backbone's features (the paper's
    H_seg^s: same backbone, its own head; `head` names it in marsedge.ssl.embedding_heads).
    `forward(x)` is the segmentation model's, so evaluation and the saved artifact are a plain
    segmentation model; `forward_train(x) -> (logits, embed)`."""

    def __init__(self, segmentation: nn.Module, embed_dim: int = 128,
                 head: str = "independent_v3plus") -> None:
        super().__init__()
        self.segmentation = segmentation
        m = segmentation.config
        self.contrastive_head = build_contrastive_head(head, segmentation.backbone.out_channels, embed_dim,
                                                       m.head_channels, m.output_stride, m.separable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation(x)

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = self.segmentation.forward_features(x)
        return logits, self.contrastive_head(feats)


class SemisupObjective:
    """CE (stage permitting) + lambda x element-wise contrastive loss against the memory bank.

    Pseudo labels come from the model's own (detached) prediction on the same augmented batch, so
    they follow the model as it improves (refreshed at every step, hence every epoch) and always
    line up with the augmented pixels. They only widen the contrastive term's labels.
    """

    def __init__(self, stages: list[StageConfig], ce_loss: nn.Module, contrastive: ElementwiseContrastiveLoss,
                 threshold: float) -> None:
        self.stages, self.ce_loss, self.contrastive, self.threshold = stages, ce_loss, contrastive, threshold

    def stage(self, epoch: int) -> StageConfig:
        end = 0
        for stage in self.stages:
            end += stage.epochs
            if epoch < end:
                return stage
        return self.stages[-1]

    def __call__(self, model: nn.Module, batch: dict, state) -> tuple[torch.Tensor, dict]:
        stage = self.stage(state.epoch)
        logits, embed = model(batch["image"], method="forward_train")
        labels = batch["label"]
        logs: dict[str, float] = {}
        terms = []  # at least one term is on in every stage (checked with the config)
        if stage.ce:
            ce = self.ce_loss(logits, labels)
            terms.append(ce)
            logs["ce"] = float(ce.detach())
        if stage.contrastive_weight:
            target = pseudo_labels(logits.detach(), labels, self.threshold) if stage.pseudo else labels
            if stage.pseudo:
                added = (labels == IGNORE_INDEX) & (target != IGNORE_INDEX)
                logs["pseudo_pixels"] = float(added.float().mean())
            con = self.contrastive(embed.float(), downsample_labels(target, tuple(embed.shape[-2:])))
            terms.append(stage.contrastive_weight * con)
            logs["contrastive"] = float(con.detach())
        return sum(terms), logs


def unlabelled_frames(cfg: SemisupConfig) -> UnlabelledFrames | None:
    """The first `max_unlabelled` frames of `unlabelled_split` (of data.root) but val's, augmented
    like the labelled ones from a stream of their own (seed + 1); a test split is refused."""
    split = cfg.semisup.unlabelled_split
    if split is None:
        return None
    frames = without_held_out(split_frames(cfg.data.root, split), held_out_files(cfg.data, cfg.seed),
                              "semisup.unlabelled_split")[: cfg.semisup.max_unlabelled]
    return UnlabelledFrames(frames, cfg.data.preprocess, cfg.data.augment, cfg.seed + 1)


@register_mode("semisup", SemisupConfig)
class Semisup(Job):
    cfg: SemisupConfig

    def prepare(self) -> None:
        cfg = self.cfg
        labelled = SegmentationFrames(training_set(cfg.data, cfg.seed), cfg.data.preprocess, cfg.data.augment,
                                      cfg.seed)
        self.frames = LabelledThenUnlabelled(labelled, unlabelled_frames(cfg))
        self.evaluator = build_evaluator(cfg, self.ctx)
        self.test_evaluator = build_test_evaluator(cfg, self.ctx)

    def build(self) -> FitPlan:
        cfg, s = self.cfg, self.cfg.semisup
        model = SemisupModel(build_model(cfg.model), s.embed_dim, s.contrastive_head)
        self.origin = initialise(model.segmentation, cfg.init)
        bank = ClassMemoryBank(cfg.model.num_classes, s.embed_dim, s.queue_length)
        ce_loss = build_loss_for(cfg, self.frames.labelled, self.ctx)
        objective = SemisupObjective(s.stages, ce_loss, ElementwiseContrastiveLoss(bank, s.temperature),
                                     s.pseudo_threshold)
        # a stage without CE (or without the contrastive term) leaves a head unused: DDP must know
        partial = any(not st.ce or not st.contrastive_weight for st in s.stages)
        return FitPlan(model, objective, self.frames, self.evaluator, self.test_evaluator,
                       extra_state={"loss": ce_loss, "memory_bank": bank},
                       artifact=Artifact(model.segmentation, cfg.model, cfg.data.preprocess),
                       find_unused_parameters=partial)

    def banner(self) -> str:
        cfg, frames = self.cfg, self.frames
        plan = ", ".join(f"{s.name} {s.epochs}" for s in cfg.semisup.stages)
        return (f"semi-supervised {cfg.model.backbone} + {cfg.model.head} (contrastive head "
                f"{cfg.semisup.contrastive_head}), {self.origin}; "
                f"{frames.n_labelled} labelled + {len(frames) - frames.n_labelled} unlabelled frames; "
                f"stages: {plan}")
