"""What distillation trains and minimises: the student with its adapters, and the weighted sum

    L = w_gt * L_gt(student, label) + w_kd * L_kd + w_cwd * L_cwd + w_feat * L_feat

where L_gt is `loss.name` of the training config (cross-entropy with 255 ignored, or one of the
class-balanced losses of marsedge.train.losses) on labelled pixels only, L_cwd is channel-wise
distillation of the logits (averaged with that of the `cwd_pairs` maps), and the distillation
terms (marsedge.distill.losses) compare with the teacher on every frame, labelled or not.
The teacher's logits come from the batch (`teacher_logits`, read from the logit cache) when
present, from a live forward of the frozen teacher otherwise, always for the very input the student
sees. With `confidence_threshold` > 0, L_kd counts only the pixels where the teacher's top softmax
probability reaches it.

On the first step of a run the objective reports each weighted term and the norm of its gradient
on the student's logits (printed, and written to runs/<name>/loss_terms.json), so a term whose
scale swamps or vanishes next to the others shows before any time is spent.

`StudentWithAdapters` is the module the loop trains: the student plus the learned 1x1 adapters of
the channel-wise and feature losses (so DDP synchronises the adapters too and resume restores
them); only the student goes into the checkpoint artefact.
"""

from __future__ import annotations

import torch
from torch import nn

from marsedge.errors import ConfigError
from marsedge.io import atomic_write_json

from .config import DistillSection
from .losses import ChannelWiseLoss, FeatureLoss, PixelKDLoss
from .sampling import flatten_groups
from .teacher import FrozenTeacher


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
    """`objective(model, batch, state) -> (loss, logs)` for marsedge.train.engine.loop.fit."""

    def __init__(self, section: DistillSection, supervised: nn.Module, teacher: FrozenTeacher | None,
                 report_first_step: bool = False) -> None:
        self.weights = {"gt": section.gt_weight, "kd": section.kd_weight, "cwd": section.cwd_weight,
                        "feature": section.feature_weight}
        self.supervised = supervised
        self.teacher = teacher
        self.cwd_pairs = dict(section.cwd_pairs)
        self.with_features = section.uses_stage_maps
        self.confidence_threshold = section.confidence_threshold
        self.report_pending = report_first_step

    def _teacher_outputs(self, batch: dict, with_features: bool) -> tuple[torch.Tensor, dict]:
        if "teacher_logits" in batch and not with_features:
            return batch["teacher_logits"].float(), {}
        if self.teacher is None:
            raise RuntimeError("no cached teacher logits in the batch and no live teacher to compute them")
        return self.teacher(batch["image"], with_features=with_features)

    def _confident(self, teacher_logits: torch.Tensor) -> torch.Tensor | None:
        if self.confidence_threshold <= 0:
            return None
        return torch.softmax(teacher_logits, dim=1).amax(dim=1) >= self.confidence_threshold

    def report(self, values: dict[str, torch.Tensor], logits: torch.Tensor, state) -> dict:
        """Each weighted term and the L2 norm of its gradient on the student's logits (rank 0 prints
        them and writes runs/<name>/loss_terms.json)."""
        scales = {}
        for name, value in values.items():
            weighted = self.weights[name] * value
            grad = torch.autograd.grad(weighted, logits, retain_graph=True, allow_unused=True)[0] \
                if weighted.requires_grad else None
            scales[name] = {"weight": self.weights[name], "value": float(value.detach()),
                            "grad_norm_logits": 0.0 if grad is None else float(grad.float().norm())}
        if state.ctx.is_main:
            atomic_write_json(state.run_dir / "loss_terms.json", {"step": state.step, "terms": scales})
            parts = ", ".join(f"{n} {s['weight']:g} x {s['value']:.4g} "
                              f"(|dL/dlogits| {s['grad_norm_logits']:.3g})" for n, s in scales.items())
            print(f"[{state.cfg.name}] loss terms at the first step: {parts}", flush=True)
        return scales

    def __call__(self, model: nn.Module, batch: dict, state) -> tuple[torch.Tensor, dict[str, float]]:
        terms: nn.ModuleDict = state.model.terms  # the plain module's losses (adapters are trained)
        batch = flatten_groups(batch)
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
                values["kd"] = terms["kd"](logits, t_logits, self._confident(t_logits))
            if "cwd" in terms:
                parts = [terms["cwd"](logits, t_logits)]
                parts += [terms["cwd_maps"][s](feats[s], t_feats[t]) for s, t in self.cwd_pairs.items()]
                values["cwd"] = torch.stack(parts).mean()
            if "feature" in terms:
                values["feature"] = terms["feature"](feats, t_feats)
        if self.report_pending and state.step == 0:
            self.report(values, logits, state)
        self.report_pending = False
        loss = sum(self.weights[name] * value for name, value in values.items())
        return loss, {f"loss_{name}": float(value.detach()) for name, value in values.items()}
