"""The distillation mode of the shared training loop: an objective, a frozen teacher, a logit cache.

There is no second loop here. `marsedge.train.loop.fit` runs distillation exactly as it runs
finetuning (runs folder, resume, DDP, AMP, evaluation, early stopping, checkpoints); this module
supplies what is specific to distillation:

- `DistillConfig`: the training config plus a `distill:` section (teacher, loss weights,
  unlabelled frames, logit cache);
- `StudentWithAdapters`: the module the loop trains, the student plus the learned 1x1 adapters
  of the channel-wise and feature losses (so DDP synchronises the adapters too and resume
  restores them); only the student goes into the checkpoint artefact;
- `DistillObjective`: the weighted sum

      L = w_gt * L_gt(student, label) + w_kd * L_kd + w_cwd * L_cwd + w_feat * L_feat

  where L_gt is `loss.name` of the training config (cross-entropy with 255 ignored, or one of the
  class-balanced losses of marsedge.train.losses) on labelled pixels only, L_cwd is channel-wise
  distillation of the logits (averaged with that of the `cwd_pairs` maps), and the distillation
  terms (marsedge.distill.losses) compare with the teacher on every frame, labelled or not.
  The teacher's logits come from the batch (`teacher_logits`, read from the logit cache) when
  present, from a live forward of the frozen teacher otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from marsedge.errors import ConfigError
from marsedge.io import sha256_file
from marsedge.models.build import ModelConfig, build_model
from marsedge.train.config import TrainConfig
from marsedge.train.datasets import SegmentationFrames, training_set
from marsedge.train.distributed import DistContext, barrier, init_distributed, shutdown_distributed
from marsedge.train.finetune import build_evaluator, build_loss_for, initialise
from marsedge.train.frame_sources import SourceConfig, mix_sources
from marsedge.train.loop import Artifact, build_train_loader, fit

from .cache import LogitCache, fill_cache
from .data import DistillFrames, UnlabelledFrames
from .losses import ChannelWiseLoss, FeatureLoss, PixelKDLoss
from .teacher import FrozenTeacher, stage_channels


@dataclass
class DistillSection:
    teacher: str = ""  # the frozen teacher's checkpoint (required)
    teacher_precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on GPU, fp32 on CPU
    gt_weight: float = 1.0  # ground-truth loss (`loss.name`) on labelled pixels
    kd_weight: float = 1.0  # pixel-wise KD
    temperature: float = 4.0
    cwd_weight: float = 0.0  # channel-wise distillation of the logits
    cwd_tau: float = 4.0
    # channel-wise distillation also of these maps (student stage -> teacher stage), through a learned
    # 1x1 adapter where the channel counts differ; the cwd term is then the mean over logits and maps
    cwd_pairs: dict[str, str] = field(default_factory=dict)
    feature_weight: float = 0.0  # feature distillation on `feature_pairs`
    feature_pairs: dict[str, str] = field(default_factory=dict)  # student stage -> teacher stage
    # Frames without labels added to the distillation set (only the KD terms learn from them):
    # sources as in pretraining, e.g. [{root: data/ai4mars, split: unlabelled}, {root: DIR, kind: folder}]
    unlabelled: list[SourceConfig] = field(default_factory=list)
    unlabelled_frames: int | None = None  # at most this many, drawn by proportion; null: all of them
    # Teacher logits cached on disk for un-augmented frames (see marsedge.distill.cache); needs
    # data.augment.enabled false. null: the teacher runs live on every batch.
    cache_dir: str | None = None
    cache_batch_size: int = 8

    @property
    def uses_stage_maps(self) -> bool:
        """Whether a loss compares intermediate maps (not only logits) of student and teacher."""
        return self.feature_weight > 0 or (self.cwd_weight > 0 and bool(self.cwd_pairs))


@dataclass
class DistillConfig(TrainConfig):
    """`python distill.py --config configs/student/<name>.yaml`: the student is `model`."""

    mode: str = "distill"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(backbone="mnv2_1.0", head="deeplabv3plus",
                                                                   separable=True))
    distill: DistillSection = field(default_factory=DistillSection)

    def validate(self) -> None:
        super().validate()
        d = self.distill
        if not d.teacher:
            raise ConfigError("config key 'distill.teacher' must name the teacher checkpoint")
        weights = {"gt_weight": d.gt_weight, "kd_weight": d.kd_weight, "cwd_weight": d.cwd_weight,
                   "feature_weight": d.feature_weight}
        for key, value in weights.items():
            if value < 0:
                raise ConfigError(f"config key 'distill.{key}' must be >= 0, got {value}")
        if not any(v > 0 for v in weights.values()):
            raise ConfigError("config keys 'distill.*_weight': at least one loss weight must be positive")
        for key in ("temperature", "cwd_tau"):
            if getattr(d, key) <= 0:
                raise ConfigError(f"config key 'distill.{key}' must be positive, got {getattr(d, key)}")
        if d.feature_weight > 0 and not d.feature_pairs:
            raise ConfigError("config key 'distill.feature_pairs' must name stages when feature_weight > 0")
        if any(src.proportion < 0 for src in d.unlabelled) or (
            d.unlabelled and sum(src.proportion for src in d.unlabelled) <= 0
        ):
            raise ConfigError("config key 'distill.unlabelled[*].proportion' must be >= 0 with a "
                              "positive sum")
        if d.cache_dir and self.data.augment.enabled:
            raise ConfigError(
                "config key 'distill.cache_dir': cached teacher logits belong to un-augmented frames; "
                "set data.augment.enabled=false or drop the cache (the teacher then runs live)"
            )
        if d.cwd_pairs and d.cwd_weight <= 0:
            raise ConfigError("config key 'distill.cwd_pairs' needs cwd_weight > 0")
        if d.cache_dir and d.uses_stage_maps:
            raise ConfigError("config key 'distill.cache_dir': feature and channel-wise map distillation "
                              "need the live teacher (its stage maps are not cached); set feature_weight=0 "
                              "and cwd_pairs={} or drop the cache")


class StudentWithAdapters(nn.Module):
    """What the loop trains: the student and the distillation losses that own learned adapters."""

    def __init__(self, student: nn.Module, terms: nn.ModuleDict) -> None:
        super().__init__()
        self.student = student
        self.terms = terms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.student.forward_features(x)


def build_terms(section: DistillSection, student_channels: dict[str, int],
                teacher_channels: dict[str, int], num_classes: int) -> nn.ModuleDict:
    """The distillation losses with a positive weight, keyed kd / cwd / feature."""
    terms = nn.ModuleDict()
    if section.kd_weight > 0:
        terms["kd"] = PixelKDLoss(section.temperature)
    if section.cwd_weight > 0:
        terms["cwd"] = ChannelWiseLoss(section.cwd_tau, num_classes, num_classes)
        if section.cwd_pairs:
            check_stage_pairs("cwd_pairs", section.cwd_pairs, student_channels, teacher_channels)
            terms["cwd_maps"] = nn.ModuleDict({
                s: ChannelWiseLoss(section.cwd_tau, student_channels[s], teacher_channels[t])
                for s, t in section.cwd_pairs.items()})
    if section.feature_weight > 0:
        check_stage_pairs("feature_pairs", section.feature_pairs, student_channels, teacher_channels)
        terms["feature"] = FeatureLoss(section.feature_pairs, student_channels, teacher_channels)
    return terms


def check_stage_pairs(key: str, pairs: dict[str, str], student_channels: dict[str, int],
                      teacher_channels: dict[str, int]) -> None:
    """Every (student stage, teacher stage) pair names maps the two models have."""
    for s, t in pairs.items():
        if s not in student_channels:
            raise ConfigError(f"config key 'distill.{key}.{s}': the student has no stage {s!r} "
                              f"(stages: {', '.join(student_channels)})")
        if t not in teacher_channels:
            raise ConfigError(f"config key 'distill.{key}.{s}': the teacher has no stage {t!r} "
                              f"(stages: {', '.join(teacher_channels)})")


class DistillObjective:
    """`objective(model, batch, state) -> (loss, logs)` for marsedge.train.loop.fit."""

    def __init__(self, section: DistillSection, supervised: nn.Module, teacher: FrozenTeacher | None) -> None:
        self.weights = {"gt": section.gt_weight, "kd": section.kd_weight, "cwd": section.cwd_weight,
                        "feature": section.feature_weight}
        self.supervised = supervised
        self.teacher = teacher
        self.cwd_pairs = dict(section.cwd_pairs)
        self.with_features = section.uses_stage_maps

    def _teacher_outputs(self, batch: dict, with_features: bool) -> tuple[torch.Tensor, dict]:
        if "teacher_logits" in batch and not with_features:
            return batch["teacher_logits"].float(), {}
        if self.teacher is None:
            raise RuntimeError("no cached teacher logits in the batch and no live teacher to compute them")
        return self.teacher(batch["image"], with_features=with_features)

    def __call__(self, model: nn.Module, batch: dict, state) -> tuple[torch.Tensor, dict[str, float]]:
        terms: nn.ModuleDict = state.model.terms  # the plain module's losses (adapters are trained)
        with_features = self.with_features
        if with_features:
            logits, feats = model(batch["image"], method="forward_features")
        else:
            logits, feats = model(batch["image"]), {}
        values: dict[str, torch.Tensor] = {}
        if self.weights["gt"] > 0:
            values["gt"] = self.supervised(logits, batch["label"])
        if len(terms):
            t_logits, t_feats = self._teacher_outputs(batch, with_features)
            if "kd" in terms:
                values["kd"] = terms["kd"](logits, t_logits)
            if "cwd" in terms:
                parts = [terms["cwd"](logits, t_logits)]
                parts += [terms["cwd_maps"][s](feats[s], t_feats[t]) for s, t in self.cwd_pairs.items()]
                values["cwd"] = torch.stack(parts).mean()
            if "feature" in terms:
                values["feature"] = terms["feature"](feats, t_feats)
        loss = sum(self.weights[name] * value for name, value in values.items())
        return loss, {f"loss_{name}": float(value.detach()) for name, value in values.items()}


CONFIG = DistillConfig


def build_distill_set(cfg: DistillConfig) -> DistillFrames:
    """The labelled training set train.py would use, plus the configured unlabelled frames."""
    spec, augment = cfg.data.preprocess, (cfg.data.augment if cfg.data.augment.enabled else None)
    labelled = SegmentationFrames(training_set(cfg.data, cfg.seed), spec, augment, cfg.seed)
    unlabelled = None
    if cfg.distill.unlabelled:
        # at most `unlabelled_frames`: a seeded draw by proportion (as pretraining) when there are more
        refs = mix_sources(cfg.distill.unlabelled, cfg.distill.unlabelled_frames, cfg.seed, at_most=True)
        unlabelled = UnlabelledFrames(refs, spec, augment, cfg.seed)
    return DistillFrames(labelled, unlabelled)


def attach_logit_cache(cfg: DistillConfig, frames: DistillFrames, teacher: FrozenTeacher, teacher_sha256: str,
                       ctx: DistContext) -> LogitCache:
    """Fill the cache with the teacher's logits of every frame not cached yet (each rank a share),
    then make the dataset read them. A cache written for another teacher or spec is refused."""
    cache = LogitCache(cfg.distill.cache_dir, teacher_sha256, cfg.data.preprocess, teacher.num_classes)

    def teacher_logits(batch: np.ndarray) -> np.ndarray:
        return teacher(torch.from_numpy(batch))[0].cpu().numpy()

    fill_cache(cache, frames.names, lambda i: frames.frame(i)["image"].numpy(), teacher_logits,
               cfg.distill.cache_batch_size, progress=ctx.is_main and cfg.run.progress,
               shard=(ctx.rank, ctx.world_size))
    barrier(ctx)
    frames.cache = cache
    return cache


def write_student(cfg: DistillConfig, student: nn.Module, summary: dict, teacher_sha256: str) -> Path | None:
    """runs/<name>/student.pt: the best student weights (last.pt's without an evaluation) with config,
    class table and preprocessing (what marsedge.edge.export reads), plus where it came from; no
    optimiser state. None when the run trained nothing (no checkpoint to take weights from)."""
    from marsedge.config import to_dict
    from marsedge.models.checkpoints import load_checkpoint, save_checkpoint

    run_dir = Path(summary["run_dir"])
    source = next((p for p in (run_dir / "best.pt", run_dir / "last.pt") if p.is_file()), None)
    if source is None:
        return None
    student.load_state_dict(load_checkpoint(source).state_dict)
    extra = {"distilled_from": cfg.distill.teacher, "teacher_sha256": teacher_sha256,
             "distill": to_dict(cfg.distill), "best": summary["best"]}
    return save_checkpoint(run_dir / "student.pt", student, cfg.model, cfg.data.preprocess, extra=extra)


def run(cfg: DistillConfig, resume: bool = False) -> dict:
    """Distil as configured; returns the loop's summary plus `student` (the exported checkpoint)."""
    ctx = init_distributed(cfg.run.device)
    try:
        d = cfg.distill
        # the cache key (every rank) and the student's provenance (rank 0): a big teacher is read once each
        teacher_sha256 = sha256_file(d.teacher) if (d.cache_dir or ctx.is_main) else ""
        teacher = FrozenTeacher.from_checkpoint(d.teacher, ctx.device, d.teacher_precision)
        teacher.check_student_input(cfg.data.preprocess, cfg.model.num_classes)
        frames = build_distill_set(cfg)
        if d.cache_dir:
            attach_logit_cache(cfg, frames, teacher, teacher_sha256, ctx)
        loader = build_train_loader(frames, cfg, ctx)
        evaluator = build_evaluator(cfg, ctx)
        torch.manual_seed(cfg.seed)  # the same initial student on every rank and every run
        student = build_model(cfg.model)
        origin = initialise(student, cfg.init)
        supervised = build_loss_for(cfg, frames.labelled, ctx)
        student_channels = stage_channels(student, cfg.model.in_channels) if d.uses_stage_maps else {}
        terms = build_terms(d, student_channels, teacher.channels, cfg.model.num_classes)
        # with every target cached and no feature term, the teacher leaves memory before training
        live_teacher = None if d.cache_dir else teacher
        del teacher
        if ctx.is_main:
            unlabelled = len(frames.unlabelled) if frames.unlabelled is not None else 0
            print(f"[{cfg.name}] student {cfg.model.backbone} + {cfg.model.head} ({origin}) "
                  f"<- teacher {d.teacher}; {len(frames.labelled)} labelled + {unlabelled} unlabelled "
                  f"frames, {'cached' if d.cache_dir else 'live'} teacher, {ctx.world_size} process(es) "
                  f"on {ctx.device}")
        summary = fit(cfg, StudentWithAdapters(student, terms), DistillObjective(d, supervised, live_teacher),
                      loader, evaluator=evaluator, ctx=ctx, extra_state={"loss": supervised},
                      artifact=Artifact(student, cfg.model, cfg.data.preprocess), resume=resume)
        finished = ctx.is_main and not summary["interrupted"]
        exported = write_student(cfg, student, summary, teacher_sha256) if finished else None
        if exported is not None:
            summary["student"] = str(exported)
            print(f"[{cfg.name}] student checkpoint for export: {exported}")
        summary["is_main"] = ctx.is_main
        return summary
    finally:
        shutdown_distributed()
