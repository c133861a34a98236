"""Registered distillation terms: one class per term, registered once with what it needs.

    distill:
      terms:
        kd: {weight: 1.0, temperature: 1.0}
        cwd: {weight: 3.0, tau: 4.0, pairs: {head: head}}

A term is a `DistillTerm` subclass under `@register_term(name, options=..., ...)`: its options
dataclass (`weight` plus the term's own keys, read as `distill.terms.<name>.<key>`), `check` (what
the types cannot say), `build` (the modules it owns: learned adapters, running state) and `loss`.
The decorator declares what the rest of distillation must provide:

    needs_stage_maps    the student's and teacher's intermediate maps (not only the logits); a
                        callable of the options where that depends on them (cwd with `pairs`)
    uses_cached_logits  the teacher's logits may come from the logit cache; False: live teacher only
    stateful            its modules keep running state (no gradient): they stay out of the trained
                        model (no DDP buffer broadcast, no EMA) and are checkpointed as extra state

Terms run in registration order (the order of their losses in the sum is fixed). Term losses
compare with the teacher on every frame, labelled or not (marsedge.distill.losses holds formulas).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from marsedge.errors import ConfigError

from .losses import ChannelWiseLoss, FeatureLoss, PixelKDLoss

KeyName = Callable[[str], str]  # option -> the config key the user wrote it under


@dataclass
class TermInputs:
    """What a term compares: student and teacher logits (N,K,H,W) and, for a term that needs stage
    maps, their stage maps by name (empty otherwise)."""

    logits: torch.Tensor
    teacher_logits: torch.Tensor
    feats: dict[str, torch.Tensor]
    teacher_feats: dict[str, torch.Tensor]


@dataclass(frozen=True)
class StageChannels:
    """What `build` may size its modules by."""

    student: dict[str, int]
    teacher: dict[str, int]
    num_classes: int


class DistillTerm:
    """Base of a registered term; `register_term` sets the class attributes."""

    name: ClassVar[str]
    options_type: ClassVar[type]
    stage_maps: ClassVar[bool | Callable[[Any], bool]]
    uses_cached_logits: ClassVar[bool]
    stateful: ClassVar[bool]

    def __init__(self, options: Any) -> None:
        self.options = options

    @property
    def weight(self) -> float:
        return float(self.options.weight)

    def needs_stage_maps(self) -> bool:
        maps = type(self).stage_maps
        return bool(maps(self.options)) if callable(maps) else maps

    def check(self, key: KeyName) -> None:
        """Refuse options that cannot work (a ConfigError naming `key(option)`); types are checked."""

    def build(self, channels: StageChannels, key: KeyName) -> dict[str, nn.Module]:
        """The modules the term owns (learned adapters, running state), by names unique among all
        terms (usually the term's own); none by default."""
        return {}

    def loss(self, modules: Mapping[str, nn.Module], x: TermInputs) -> torch.Tensor:
        """The unweighted term (a scalar) from the modules `build` made."""
        raise NotImplementedError


TERMS: dict[str, type[DistillTerm]] = {}


def register_term(name: str, *, options: type, needs_stage_maps: bool | Callable[[Any], bool] = False,
                  uses_cached_logits: bool = True, stateful: bool = False):
    """Class decorator: make a `DistillTerm` subclass the term `distill.terms.<name>`."""

    def wrap(cls: type[DistillTerm]) -> type[DistillTerm]:
        if name in TERMS and TERMS[name] is not cls:
            raise ValueError(f"distillation term {name!r} is registered twice")
        if "weight" not in {f.name for f in dataclasses.fields(options)}:
            raise TypeError(f"distillation term {name!r}: its options dataclass needs a `weight` field")
        cls.name, cls.options_type, cls.stage_maps = name, options, needs_stage_maps
        cls.uses_cached_logits, cls.stateful = uses_cached_logits, stateful
        TERMS[name] = cls
        return cls

    return wrap


def check_stage_pairs(key: str, pairs: dict[str, str], student_channels: dict[str, int],
                      teacher_channels: dict[str, int]) -> None:
    """Every (student stage, teacher stage) pair names maps the two models have."""
    for s, t in pairs.items():
        if s not in student_channels:
            raise ConfigError(f"config key '{key}.{s}': the student has no stage {s!r} "
                              f"(stages: {', '.join(student_channels)})")
        if t not in teacher_channels:
            raise ConfigError(f"config key '{key}.{s}': the teacher has no stage {t!r} "
                              f"(stages: {', '.join(teacher_channels)})")


@dataclass
class KDOptions:
    weight: float = 1.0
    temperature: float = 4.0
    # KD only where the teacher's top softmax probability (at T = 1) is at least this; 0: every pixel
    confidence_threshold: float = 0.0


@register_term("kd", options=KDOptions)
class PixelKDTerm(DistillTerm):
    """Pixel-wise KD (PixelKDLoss), optionally only on the pixels the teacher is sure of."""

    def check(self, key: KeyName) -> None:
        if self.options.temperature <= 0:
            raise ConfigError(f"config key '{key('temperature')}' must be positive, got "
                              f"{self.options.temperature}")
        if not 0 <= self.options.confidence_threshold < 1:
            raise ConfigError(f"config key '{key('confidence_threshold')}' must be in [0, 1), got "
                              f"{self.options.confidence_threshold}")

    def build(self, channels: StageChannels, key: KeyName) -> dict[str, nn.Module]:
        return {"kd": PixelKDLoss(self.options.temperature)}

    def loss(self, modules: Mapping[str, nn.Module], x: TermInputs) -> torch.Tensor:
        threshold = self.options.confidence_threshold
        sure = torch.softmax(x.teacher_logits, dim=1).amax(dim=1) >= threshold if threshold > 0 else None
        return modules["kd"](x.logits, x.teacher_logits, sure)


@dataclass
class ChannelWiseOptions:
    weight: float = 1.0
    tau: float = 4.0
    # also these maps (student stage -> teacher stage), through a learned 1x1 adapter where the
    # channel counts differ; the term is then the mean over the logits and the maps
    pairs: dict[str, str] = field(default_factory=dict)


@register_term("cwd", options=ChannelWiseOptions, needs_stage_maps=lambda o: bool(o.pairs))
class ChannelWiseTerm(DistillTerm):
    """Channel-wise distillation (ChannelWiseLoss) of the logits, averaged with that of `pairs`."""

    def check(self, key: KeyName) -> None:
        if self.options.tau <= 0:
            raise ConfigError(f"config key '{key('tau')}' must be positive, got {self.options.tau}")
        if self.options.pairs and self.options.weight <= 0:
            raise ConfigError(f"config key '{key('pairs')}' needs {key('weight').split('.')[-1]} > 0")

    def build(self, channels: StageChannels, key: KeyName) -> dict[str, nn.Module]:
        tau, pairs, k = self.options.tau, self.options.pairs, channels.num_classes
        modules: dict[str, nn.Module] = {"cwd": ChannelWiseLoss(tau, k, k)}
        if pairs:
            check_stage_pairs(key("pairs"), pairs, channels.student, channels.teacher)
            modules["cwd_maps"] = nn.ModuleDict({
                s: ChannelWiseLoss(tau, channels.student[s], channels.teacher[t]) for s, t in pairs.items()})
        return modules

    def loss(self, modules: Mapping[str, nn.Module], x: TermInputs) -> torch.Tensor:
        parts = [modules["cwd"](x.logits, x.teacher_logits)]
        maps = modules["cwd_maps"] if self.options.pairs else {}
        parts += [maps[s](x.feats[s], x.teacher_feats[t]) for s, t in self.options.pairs.items()]
        return torch.stack(parts).mean()


@dataclass
class FeatureOptions:
    weight: float = 1.0
    pairs: dict[str, str] = field(default_factory=dict)  # student stage -> teacher stage


@register_term("feature", options=FeatureOptions, needs_stage_maps=True, uses_cached_logits=False)
class FeatureTerm(DistillTerm):
    """FitNets-style feature distillation (FeatureLoss) on `pairs`."""

    def check(self, key: KeyName) -> None:
        if self.options.weight > 0 and not self.options.pairs:
            raise ConfigError(f"config key '{key('pairs')}' must name stages when "
                              f"{key('weight').split('.')[-1]} > 0")

    def build(self, channels: StageChannels, key: KeyName) -> dict[str, nn.Module]:
        check_stage_pairs(key("pairs"), self.options.pairs, channels.student, channels.teacher)
        return {"feature": FeatureLoss(self.options.pairs, channels.student, channels.teacher)}

    def loss(self, modules: Mapping[str, nn.Module], x: TermInputs) -> torch.Tensor:
        return modules["feature"](x.feats, x.teacher_feats)
