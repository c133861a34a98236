"""What distillation trains and minimises: the student with its adapters, and the weighted sum

    L = w_gt * L_gt(student, label) + sum over the terms t of w_t * L_t

where L_gt is `loss.name` of the training config (cross-entropy with 255 ignored, or one of the
class-balanced losses of marsedge.train.losses) on labelled pixels only, and the terms are those of
`distill.terms` with a positive weight (marsedge.distill.terms: kd, cwd, feature, ...), added in
their registration order; they compare with the teacher on every frame, labelled or not.
The teacher's logits come from the batch (`teacher_logits`, read from the logit cache) when
present, from a live forward of the frozen teacher otherwise, always for the very input the student
sees; its stage maps only when a term needs them.

On the first step of a run the objective reports each weighted term and the norm of its gradient
on the student's logits (printed, and written to runs/<name>/loss_terms.json), so a term whose
scale swamps or vanishes next to the others shows before any time is spent.

`StudentWithAdapters` is the module the loop trains: the student plus the modules of the stateless
terms, e.g. the learned 1x1 adapters of the channel-wise and feature losses (so DDP synchronises
the adapters too and resume restores them); only the student goes into the checkpoint artefact.
"""

from __future__ import annotations

import torch
from torch import nn

from marsedge.io import atomic_write_json

from .config import DistillSection
from .sampling import flatten_groups
from .teacher import FrozenTeacher
from .terms import StageChannels, TermInputs


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
                teacher_channels: dict[str, int], num_classes: int, stateful: bool = False) -> nn.ModuleDict:
    """The modules of the terms with a positive weight (marsedge.distill.terms), in registration
    order: those of the stateless terms (trained with the student), or with `stateful` those of the
    stateful ones (the objective keeps them; the mode checkpoints them as extra state)."""
    channels = StageChannels(student_channels, teacher_channels, num_classes)
    modules = nn.ModuleDict()
    for name, term in section.active_terms().items():
        if term.stateful == stateful:
            modules.update(term.build(channels, lambda option, name=name: section.key(name, option)))
    return modules


class DistillObjective:
    """`objective(model, batch, state) -> (loss, logs)` for marsedge.train.engine.loop.fit."""

    def __init__(self, section: DistillSection, supervised: nn.Module, teacher: FrozenTeacher | None,
                 report_first_step: bool = False, stateful_modules: nn.ModuleDict | None = None) -> None:
        self.terms = section.active_terms()
        self.weights = {"gt": section.gt_weight, **{name: term.weight for name, term in self.terms.items()}}
        self.supervised = supervised
        self.teacher = teacher
        self.stateful_modules = stateful_modules if stateful_modules is not None else nn.ModuleDict()
        self.with_features = section.uses_stage_maps
        self.report_pending = report_first_step

    def _teacher_outputs(self, batch: dict, with_features: bool) -> tuple[torch.Tensor, dict]:
        if "teacher_logits" in batch and not with_features:
            return batch["teacher_logits"].float(), {}
        if self.teacher is None:
            raise RuntimeError("no cached teacher logits in the batch and no live teacher to compute them")
        return self.teacher(batch["image"], with_features=with_features)

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
        # the plain module's term modules (adapters are trained) and the stateful terms' own
        modules = {**state.model.terms, **self.stateful_modules}
        batch = flatten_groups(batch)
        with_features = self.with_features
        if with_features:
            logits, feats = model(batch["image"], method="forward_features")
        else:
            logits, feats = model(batch["image"]), {}
        values: dict[str, torch.Tensor] = {}
        if self.weights["gt"] > 0:
            values["gt"] = self.supervised(logits, batch["label"])
        if self.terms:
            t_logits, t_feats = self._teacher_outputs(batch, with_features)
            inputs = TermInputs(logits, t_logits, feats, t_feats)
            for name, term in self.terms.items():
                values[name] = term.loss(modules, inputs)
        if self.report_pending and state.step == 0:
            self.report(values, logits, state)
        self.report_pending = False
        loss = sum(self.weights[name] * value for name, value in values.items())
        return loss, {f"loss_{name}": float(value.detach()) for name, value in values.items()}
