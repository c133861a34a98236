"""Mode `finetune`: supervised segmentation training of a zoo model on AI4Mars-layout data.

objective = the configured segmentation loss on (model(image), label); data = the composed training
set with joint augmentation; evaluator = every metric on the gold test set(s). Starting weights:
from scratch, our own checkpoint (pretraining or an earlier finetune), or a torchvision /
converted SimCLRv2 backbone (`init.format`).
"""

from __future__ import annotations

import torch
from torch import nn

from marsedge.errors import ModelError
from marsedge.models.build import build_model
from marsedge.train.config import InitConfig, TrainConfig
from marsedge.train.datasets import SegmentationFrames, class_frequencies, test_sets, training_set
from marsedge.train.distributed import DistContext, barrier, init_distributed, shutdown_distributed
from marsedge.train.evaluate import SegmentationEvaluator, build_eval_loader
from marsedge.train.loop import build_train_loader, fit
from marsedge.train.losses import build_loss, needs_frequencies

CONFIG = TrainConfig


class SupervisedObjective:
    """loss(model(image), label); the loss's running statistics (recall loss) are checkpointed."""

    def __init__(self, loss: nn.Module) -> None:
        self.loss = loss

    def __call__(self, model: nn.Module, batch: dict, state) -> tuple[torch.Tensor, dict]:
        logits = model(batch["image"])
        return self.loss(logits, batch["label"]), {}


def initialise(model: nn.Module, init: InitConfig) -> str:
    """Load the configured starting weights into `model`; returns a one-line description."""
    if init.checkpoint is None:
        return "from scratch"
    from marsedge.models.checkpoints import load_checkpoint, load_weights
    from marsedge.models.importers import import_file

    if init.format == "marsedge":
        ckpt = load_checkpoint(init.checkpoint)
        part = "backbone" if init.backbone_only else "all"
        report = load_weights(model, ckpt.state_dict, part=part, source=init.checkpoint)
        if not report.loaded:
            raise ModelError(f"{init.checkpoint}: no {part} tensor matches the model ({report})")
        return f"{part} from {init.checkpoint}: {report}"
    state, _ = import_file(init.checkpoint, init.format, model.backbone)
    model.backbone.load_state_dict(state)
    return f"backbone from {init.format} weights {init.checkpoint}"


def build_loss_for(cfg: TrainConfig, train_frames: SegmentationFrames, ctx: DistContext) -> nn.Module:
    """The configured loss; weighted ones get class frequencies (rank 0 counts and caches them)."""
    freqs = None
    if needs_frequencies(cfg.loss.name):
        cache = cfg.run_dir.parent / ".cache"
        if ctx.is_main:
            class_frequencies(train_frames.source, cfg.model.num_classes, cache, progress=cfg.run.progress)
        barrier(ctx)
        freqs = class_frequencies(train_frames.source, cfg.model.num_classes, cache)
    return build_loss(cfg.loss.name, cfg.model.num_classes, freqs, cfg.loss.recall_momentum).to(ctx.device)


def build_evaluator(cfg: TrainConfig, ctx: DistContext) -> SegmentationEvaluator:
    loaders = {split: build_eval_loader(SegmentationFrames(ds, cfg.data.preprocess), cfg.data.eval_batch_size,
                                        ctx, cfg.num_workers)
               for split, ds in test_sets(cfg.data).items()}
    return SegmentationEvaluator(loaders, cfg.model.num_classes, cfg.run.confusion_png)


def run(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train as configured and return the loop's summary (see marsedge.train.loop.fit)."""
    ctx = init_distributed(cfg.run.device)
    try:
        train_frames = SegmentationFrames(training_set(cfg.data, cfg.seed), cfg.data.preprocess,
                                          cfg.data.augment, cfg.seed)
        loader = build_train_loader(train_frames, cfg, ctx)
        evaluator = build_evaluator(cfg, ctx)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
        model = build_model(cfg.model)
        origin = initialise(model, cfg.init)
        loss = build_loss_for(cfg, train_frames, ctx)
        if ctx.is_main:
            print(f"[{cfg.name}] {cfg.model.backbone} + {cfg.model.head}, {origin}; "
                  f"{len(train_frames)} training frames, {ctx.world_size} process(es) on {ctx.device}")
        return fit(cfg, model, SupervisedObjective(loss), loader, evaluator=evaluator, ctx=ctx,
                   extra_state={"loss": loss}, resume=resume)
    finally:
        shutdown_distributed()
