"""Semi-supervised segmentation (the semi-supervised Mars paper, sections 5.1-5.3).

Three parts, each its own class or function:

- `ClassMemoryBank`: C queues of length L (32); each step pushes, per class present, the mean
  feature of that class's pixels; the class prototypes are the queue means m_c.
- `ElementwiseContrastiveLoss` (eq. 7): every labelled feature-map element f_i is pulled towards its
  class prototype and pushed from the others,

      L = -mean_i log  exp(cos(f_i, m_{c_i}) / t)  /  sum_c exp(cos(f_i, m_c) / t)     (t = 0.07)

  labels are downsampled (nearest) to the feature map; ignore (255) elements do not take part.
- `pseudo_labels`: unlabelled pixels whose softmax confidence exceeds 0.9 take the predicted class;
  real labels are never overridden. They join the contrastive term only, never the CE term.

`SemisupObjective` adds `weight` (0.001) x the contrastive term to cross-entropy, following the
three-stage schedule in the config (contrastive only, joint, joint + pseudo labels). The mode
(`run`) trains `SemisupModel` (the segmentation model plus a contrastive head) through the shared
loop; the memory bank is checkpointed with the run, and best.pt is a plain segmentation model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from marsedge.errors import ConfigError
from marsedge.terrain import IGNORE_INDEX
from marsedge.train.config import TrainConfig


class ClassMemoryBank:
    """Per-class FIFO queues of class-mean features (the paper's memory bank M).

    `push(features, labels)` appends, for every class with at least one labelled element, the mean
    of its (detached, L2-normalised) features; under DDP the per-class sums and counts are
    all-reduced first so every rank holds the same bank. `prototypes()` returns the mean of each
    queue and a mask of the classes seen so far. `state_dict`/`load_state_dict` let the training
    loop checkpoint and resume it (it is an `extra_state` entry).
    """

    def __init__(self, num_classes: int, dim: int, length: int = 32) -> None:
        if length < 1:
            raise ValueError(f"memory bank length must be >= 1, got {length}")
        self.num_classes, self.dim, self.length = num_classes, dim, length
        self.queue = torch.zeros(num_classes, length, dim)
        self.filled = torch.zeros(num_classes, dtype=torch.long)  # entries in use, <= length
        self.head = torch.zeros(num_classes, dtype=torch.long)  # next slot to overwrite

    @torch.no_grad()
    def push(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """features: M x D (or N x D x h x w with labels N x h x w); labels: class ids, 255 ignored."""
        if features.ndim == 4:
            features = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
            labels = labels.reshape(-1)
        keep = labels != IGNORE_INDEX
        feats = F.normalize(features[keep].detach().float(), dim=1).cpu()
        ids = labels[keep].long().cpu()
        sums = torch.zeros(self.num_classes, self.dim).index_add_(0, ids, feats)
        counts = torch.bincount(ids, minlength=self.num_classes)[: self.num_classes].float()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sums, counts = _all_reduce_cpu(sums), _all_reduce_cpu(counts)
        for c in torch.nonzero(counts).flatten().tolist():
            self.enqueue(c, sums[c] / counts[c])

    def enqueue(self, c: int, mean_feature: torch.Tensor) -> None:
        """Put one class-mean feature into class c's queue, dropping the oldest when full."""
        self.queue[c, self.head[c]] = mean_feature
        self.head[c] = (self.head[c] + 1) % self.length
        self.filled[c] = min(int(self.filled[c]) + 1, self.length)

    def prototypes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(C x D queue means, bool C mask of classes with at least one entry)."""
        seen = self.filled > 0
        means = self.queue.sum(dim=1) / self.filled.clamp(min=1)[:, None].float()
        return means, seen

    def state_dict(self) -> dict:
        return {"queue": self.queue.clone(), "filled": self.filled.clone(), "head": self.head.clone()}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["queue"].shape) != tuple(self.queue.shape):
            raise ValueError(f"memory bank shape {tuple(state['queue'].shape)} does not match "
                             f"{tuple(self.queue.shape)} (num_classes, length, dim)")
        self.queue = state["queue"].clone()
        self.filled, self.head = state["filled"].clone(), state["head"].clone()


def _all_reduce_cpu(t: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over ranks (through the backend's device for NCCL)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
    t = t.to(device)
    dist.all_reduce(t)
    return t.cpu()


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x H x W class ids -> N x h x w by nearest neighbour (ids, and 255 ignore, stay ids)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


@torch.no_grad()
def pseudo_labels(logits: torch.Tensor, labels: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """The paper's merged label y-bar: real labels kept; ignore pixels whose softmax confidence is
    above `threshold` take the predicted class; the rest stay 255.

    logits: N x K x H x W; labels: N x H x W (255 = unlabelled). Returns a new N x H x W tensor.
    """
    confidence, predicted = logits.float().softmax(dim=1).max(dim=1)
    fill = (labels == IGNORE_INDEX) & (confidence > threshold)
    return torch.where(fill, predicted, labels)


class ElementwiseContrastiveLoss(nn.Module):
    """Element-wise inter-class contrastive loss against memory-bank prototypes (eq. 7):

        L = -mean_i log exp(cos(f_i, m_{c_i})/t) / sum_{c seen} exp(cos(f_i, m_c)/t)

    over feature-map elements with a label whose class is already in the bank. `forward` first
    pushes this batch's class means into the bank (so the very first batch already has prototypes;
    the bank holds no gradient), then scores the elements against the prototypes.
    """

    def __init__(self, bank: ClassMemoryBank, temperature: float = 0.07) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.bank, self.temperature = bank, temperature

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """features: N x D x h x w; labels: N x h x w at the feature resolution (255 ignored)."""
        self.bank.push(features, labels)
        prototypes, seen = self.bank.prototypes()
        prototypes, seen = prototypes.to(features.device, features.dtype), seen.to(features.device)
        flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        ids = labels.reshape(-1)
        keep = (ids != IGNORE_INDEX) & seen[ids.clamp(max=self.bank.num_classes - 1)]
        if not keep.any():
            return features.sum() * 0.0  # nothing labelled: a zero that keeps the graph
        logits = F.normalize(flat[keep], dim=1) @ F.normalize(prototypes, dim=1).T / self.temperature
        logits = logits.masked_fill(~seen[None, :], float("-inf"))
        return F.cross_entropy(logits, ids[keep].long())


# ---- the `semisup` training mode -------------------------------------------------------------


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
    pseudo_threshold: float = 0.9
    unlabelled_split: str | None = None  # also train on these frames (CE ignores them), e.g. "unlabelled"
    max_unlabelled: int | None = None
    stages: list[StageConfig] = field(default_factory=_paper_stages)


@dataclass
class SemisupConfig(TrainConfig):
    semisup: SemisupSection = field(default_factory=SemisupSection)


CONFIG = SemisupConfig


class SemisupModel(nn.Module):
    """A segmentation model plus a contrastive head on the backbone's final map (the paper's
    H_seg^s: same backbone, its own head). `forward(x)` is the segmentation model's, so evaluation
    and the saved artifact are a plain segmentation model; `forward_train(x) -> (logits, embed)`."""

    def __init__(self, segmentation: nn.Module, embed_dim: int = 128) -> None:
        super().__init__()
        self.segmentation = segmentation
        c = segmentation.backbone.out_channels["out"]
        self.contrastive_head = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, embed_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation(x)

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = self.segmentation.forward_features(x)
        return logits, self.contrastive_head(feats["out"])


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


class _BlankLabels:
    """An unlabelled AI4Mars split seen as labelled with 255 everywhere (CE ignores every pixel)."""

    def __init__(self, source) -> None:
        self.source, self.items = source, source.items

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        sample = self.source[index]
        sample.label = np.full(sample.image.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        return sample


def _training_frames(cfg: SemisupConfig):
    from marsedge.data.ai4mars import AI4MarsDataset
    from marsedge.train.datasets import LabelledThenUnlabelled, SegmentationFrames, training_set

    spec, augment = cfg.data.preprocess, cfg.data.augment
    labelled = SegmentationFrames(training_set(cfg.data, cfg.seed), spec, augment, cfg.seed)
    unlabelled = None
    if cfg.semisup.unlabelled_split is not None:
        source = AI4MarsDataset(cfg.data.root, cfg.semisup.unlabelled_split, four_class=cfg.data.four_class)
        if cfg.semisup.max_unlabelled is not None:
            source = AI4MarsDataset(cfg.data.root, cfg.semisup.unlabelled_split, cfg.data.four_class,
                                    items=source.items[: cfg.semisup.max_unlabelled])
        unlabelled = SegmentationFrames(_BlankLabels(source), spec, augment, cfg.seed + 1)
    return LabelledThenUnlabelled(labelled, unlabelled)


def _check_schedule(cfg: SemisupConfig) -> None:
    stages = cfg.semisup.stages
    if not stages:
        raise ConfigError("config key 'semisup.stages' must list at least one stage")
    total = sum(s.epochs for s in stages)
    if total != cfg.epochs:
        raise ConfigError(f"config key 'epochs' is {cfg.epochs} but 'semisup.stages' add up to {total}")
    for i, s in enumerate(stages):
        if not s.ce and not s.contrastive_weight:
            raise ConfigError(f"config key 'semisup.stages[{i}]' ({s.name}): turns every loss term off")
        if s.pseudo and not s.contrastive_weight:
            raise ConfigError(f"config key 'semisup.stages[{i}]' ({s.name}): pseudo labels feed the "
                              "contrastive term, whose weight is 0")


def run(cfg: SemisupConfig, resume: bool = False) -> dict:
    from marsedge.models.build import build_model
    from marsedge.train.distributed import init_distributed, shutdown_distributed
    from marsedge.train.finetune import build_evaluator, build_loss_for, initialise
    from marsedge.train.loop import Artifact, build_train_loader, fit

    _check_schedule(cfg)
    ctx = init_distributed(cfg.run.device)
    try:
        frames = _training_frames(cfg)
        loader = build_train_loader(frames, cfg, ctx)
        torch.manual_seed(cfg.seed)
        model = SemisupModel(build_model(cfg.model), cfg.semisup.embed_dim)
        origin = initialise(model.segmentation, cfg.init)
        bank = ClassMemoryBank(cfg.model.num_classes, cfg.semisup.embed_dim, cfg.semisup.queue_length)
        ce_loss = build_loss_for(cfg, frames.labelled, ctx)
        objective = SemisupObjective(cfg.semisup.stages, ce_loss,
                                     ElementwiseContrastiveLoss(bank, cfg.semisup.temperature),
                                     cfg.semisup.pseudo_threshold)
        if ctx.is_main:
            plan = ", ".join(f"{s.name} {s.epochs}" for s in cfg.semisup.stages)
            print(f"[{cfg.name}] semi-supervised {cfg.model.backbone} + {cfg.model.head}, {origin}; "
                  f"{frames.n_labelled} labelled + {len(frames) - frames.n_labelled} unlabelled frames; "
                  f"stages: {plan}")
        # a stage without CE (or without the contrastive term) leaves a head unused: DDP must know
        partial = any(not s.ce or not s.contrastive_weight for s in cfg.semisup.stages)
        return fit(cfg, model, objective, loader, evaluator=build_evaluator(cfg, ctx), ctx=ctx,
                   extra_state={"loss": ce_loss, "memory_bank": bank}, resume=resume,
                   artifact=Artifact(model.segmentation, cfg.model, cfg.data.preprocess),
                   find_unused_parameters=partial)
    finally:
        shutdown_distributed()
