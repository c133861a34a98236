"""Mode `finetune`: supervised segmentation training of a zoo model on AI4Mars-layout data.

objective = the configured segmentation loss on (model(image), label); data = the composed training
set (minus `val`) with joint augmentation; evaluator = every metric on `val` (best.pt, early stop);
test evaluator = every metric on the test split(s), once, with the selected checkpoint. Starting weights:
from scratch, our own checkpoint (pretraining or an earlier finetune), or a torchvision /
converted SimCLRv2 backbone (`init.format`).
"""

from __future__ import annotations

import torch
from torch import nn

from marsedge.models.build import build_model
from marsedge.train.config import TrainConfig
from marsedge.train.engine.job import FitPlan, Job, register_mode
from marsedge.train.supervised import (
    SegmentationFrames,
    build_evaluator,
    build_loss_for,
    build_test_evaluator,
    evaluation_sizes,
    initialise,
    training_set,
)


class SupervisedObjective:
    """loss(model(image), label); the loss's running statistics (recall loss) are checkpointed."""

    def __init__(self, loss: nn.Module) -> None:
        self.loss = loss

    def __call__(self, model: nn.Module, batch: dict, state) -> tuple[torch.Tensor, dict]:
        logits = model(batch["image"])
        return self.loss(logits, batch["label"]), {}


@register_mode("finetune", TrainConfig)
class Finetune(Job):
    def prepare(self) -> None:
        cfg = self.cfg
        self.frames = SegmentationFrames(training_set(cfg.data, cfg.seed), cfg.data.preprocess,
                                         cfg.data.augment, cfg.seed)
        self.evaluator = build_evaluator(cfg, self.ctx)
        self.test_evaluator = build_test_evaluator(cfg, self.ctx)

    def build(self) -> FitPlan:
        cfg = self.cfg
        model = build_model(cfg.model)
        self.origin = initialise(model, cfg.init)
        loss = build_loss_for(cfg, self.frames, self.ctx)
        return FitPlan(model, SupervisedObjective(loss), self.frames, self.evaluator, self.test_evaluator,
                       extra_state={"loss": loss})

    def banner(self) -> str:
        cfg, ctx = self.cfg, self.ctx
        return (f"{cfg.model.backbone} + {cfg.model.head}, {self.origin}; {len(self.frames)} training "
                f"frames, {evaluation_sizes(self.evaluator, self.test_evaluator)}; {ctx.world_size} "
                f"process(es) on {ctx.device}")
