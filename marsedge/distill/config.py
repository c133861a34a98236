"""The distillation config: the training config plus a `distill:` section (teacher, loss weights,
unlabelled frames, logit cache), checked as a whole before any work starts.

    python distill.py --config configs/student/<name>.yaml        # the student is `model`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from marsedge.config import REQUIRED
from marsedge.data.frame_sources import SourceConfig
from marsedge.errors import ConfigError
from marsedge.models.build import ModelConfig
from marsedge.train.config import TrainConfig

CACHE_IN_RUN = "run"  # distill.cache_dir: the run's own folder


@dataclass
class DistillSection:
    teacher: str = REQUIRED  # the frozen teacher's checkpoint, e.g. runs/<teacher>/best.pt
    # the teacher must have been trained on data.root (recorded in its checkpoint): true distils a
    # teacher of other data anyway (e.g. a teacher of the whole release onto a subset moved elsewhere)
    allow_other_data: bool = False
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
    # How batches are drawn (marsedge.distill.sampling). balanced: each of the `batch_size` labelled
    # frames of a step comes with `unlabelled_per_labelled` unlabelled ones, and an epoch is one pass
    # over the labelled frames; pooled: batches drawn from labelled and unlabelled frames together
    # (few labelled frames among many unlabelled ones then barely reach the ground-truth term).
    sampling: Literal["balanced", "pooled"] = "balanced"
    unlabelled_per_labelled: int = 1
    # pixel KD only where the teacher's top softmax probability (at T = 1) is at least this; 0: every
    # pixel
    confidence_threshold: float = 0.0
    # Teacher logits cached on disk for un-augmented frames (see marsedge.distill.cache); needs
    # data.augment.enabled false. null: the teacher runs live on every batch; `run`: in the run's own
    # folder (runs/<name>/teacher_logits); any other value: that folder (shared by student runs).
    cache_dir: str | None = None
    cache_batch_size: int = 8

    def cache_path(self, run_dir: Path) -> Path | None:
        """Where the logit cache lives (None: no cache, the teacher runs live)."""
        if not self.cache_dir:
            return None
        return run_dir / "teacher_logits" if self.cache_dir == CACHE_IN_RUN else Path(self.cache_dir)

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
        if d.teacher in ("", REQUIRED):
            raise ConfigError("config key 'distill.teacher' is required: the teacher's checkpoint "
                              "(distill.teacher=runs/<teacher>/best.pt)")
        for i, src in enumerate(d.unlabelled):
            if not src.root:
                raise ConfigError(f"config key 'distill.unlabelled[{i}].root' is required: a tree or folder "
                                  "of unlabelled frames (distill.unlabelled=[] for none)")
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
        if d.unlabelled_per_labelled < 0:
            raise ConfigError("config key 'distill.unlabelled_per_labelled' must be >= 0, got "
                              f"{d.unlabelled_per_labelled}")
        if not 0 <= d.confidence_threshold < 1:
            raise ConfigError("config key 'distill.confidence_threshold' must be in [0, 1), got "
                              f"{d.confidence_threshold}")
        if d.cwd_pairs and d.cwd_weight <= 0:
            raise ConfigError("config key 'distill.cwd_pairs' needs cwd_weight > 0")
        if d.cache_dir and d.uses_stage_maps:
            raise ConfigError("config key 'distill.cache_dir': feature and channel-wise map distillation "
                              "need the live teacher (its stage maps are not cached); set feature_weight=0 "
                              "and cwd_pairs={} or drop the cache")
