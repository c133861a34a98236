"""Mode `distill`: a frozen teacher's knowledge into a student, through the shared training loop.

There is no second loop here. `run_job` and `marsedge.train.engine.loop.fit` run distillation
exactly as they run finetuning (runs folder, resume, DDP, AMP, evaluation and early stopping on
`val`, checkpoints, the one test scoring); this module supplies what is specific to distillation:
the frozen teacher (loaded before the seed, so the student's initial weights are those of the same
seed in any mode), the teacher-logit cache filled before training, the batches (balanced labelled
and unlabelled frames, marsedge.distill.sampling), the objective and adapters
(marsedge.distill.objective), and `runs/<name>/student.pt`, the checkpoint export reads, written
when training ends.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from marsedge.io import sha256_file
from marsedge.models.build import build_model
from marsedge.train.engine.distributed import DistContext, barrier
from marsedge.train.engine.job import FitPlan, Job, register_mode
from marsedge.train.engine.state import Artifact
from marsedge.train.supervised import (
    build_evaluator,
    build_loss_for,
    build_test_evaluator,
    evaluation_sizes,
    initialise,
)

from .cache import LogitCache, fill_cache
from .config import DistillConfig
from .data import DistillFrames, build_distill_set
from .objective import DistillObjective, StudentWithAdapters, build_terms
from .provenance import check_teacher_data
from .sampling import BalancedFrames
from .teacher import FrozenTeacher, stage_channels


def attach_logit_cache(cfg: DistillConfig, frames: DistillFrames, teacher: FrozenTeacher, teacher_sha256: str,
                       ctx: DistContext) -> LogitCache:
    """Fill the cache with the teacher's logits of every frame not cached yet (each rank a share),
    then make the dataset read them. A cache written for another teacher or spec is refused."""
    cache = LogitCache(cfg.distill.cache_path(cfg.run_dir), teacher_sha256, cfg.data.preprocess,
                       teacher.num_classes)

    def teacher_logits(batch: np.ndarray) -> np.ndarray:
        return teacher(torch.from_numpy(batch))[0].cpu().numpy()

    fill_cache(cache, frames.names, lambda i: frames.frame(i)["image"].numpy(), teacher_logits,
               cfg.distill.cache_batch_size, progress=ctx.is_main and cfg.run.progress,
               shard=(ctx.rank, ctx.world_size))
    barrier(ctx)
    frames.cache = cache
    return cache


def write_student(cfg: DistillConfig, student: nn.Module, summary: dict, teacher_sha256: str) -> Path | None:
    """runs/<name>/student.pt: the student weights selected on val (best.pt; the final ones without a
    val split) with config, class table and preprocessing (what marsedge.deploy.export reads), where it
    came from and what it was selected on; no optimiser state. None when the run trained nothing
    (no checkpoint to take weights from)."""
    from marsedge.config import to_dict
    from marsedge.models.checkpoints import load_checkpoint, save_checkpoint

    run_dir = Path(summary["run_dir"])
    source = next((p for p in (run_dir / "best.pt", run_dir / "last.pt") if p.is_file()), None)
    if source is None:
        return None
    student.load_state_dict(load_checkpoint(source).state_dict)
    extra = {"distilled_from": cfg.distill.teacher, "teacher_sha256": teacher_sha256,
             "distill": to_dict(cfg.distill), "best": summary["best"], "selected_on": summary["selected_on"]}
    return save_checkpoint(run_dir / "student.pt", student, cfg.model, cfg.data.preprocess, extra=extra)


@register_mode("distill", DistillConfig)
class Distill(Job):
    cfg: DistillConfig

    def prepare(self) -> None:
        cfg, ctx, d = self.cfg, self.ctx, self.cfg.distill
        check_teacher_data(cfg)  # before the teacher's weights are read: a wrong teacher costs nothing
        # the cache key (every rank) and the student's provenance (rank 0): a big teacher is read once each
        self.teacher_sha256 = sha256_file(d.teacher) if (d.cache_dir or ctx.is_main) else ""
        self.teacher = FrozenTeacher.from_checkpoint(d.teacher, ctx.device, d.teacher_precision)
        self.teacher.check_student_input(cfg.data.preprocess, cfg.model.num_classes)
        self.frames = build_distill_set(cfg)
        if d.cache_dir:
            attach_logit_cache(cfg, self.frames, self.teacher, self.teacher_sha256, ctx)
        self.evaluator = build_evaluator(cfg, ctx)
        self.test_evaluator = build_test_evaluator(cfg, ctx)

    def build(self) -> FitPlan:
        cfg, d = self.cfg, self.cfg.distill
        self.student = build_model(cfg.model)
        self.origin = initialise(self.student, cfg.init)
        supervised = build_loss_for(cfg, self.frames.labelled, self.ctx)
        student_channels = stage_channels(self.student, cfg.model.in_channels) if d.uses_stage_maps else {}
        teacher, self.teacher = self.teacher, None
        terms = build_terms(d, student_channels, teacher.channels, cfg.model.num_classes)
        stateful = build_terms(d, student_channels, teacher.channels, cfg.model.num_classes, stateful=True)
        # with every target cached and no feature term, the teacher leaves memory before training
        live_teacher = None if d.cache_dir else teacher
        objective = DistillObjective(d, supervised, live_teacher, report_first_step=True,
                                     stateful_modules=stateful)
        train_set = (BalancedFrames(self.frames, d.unlabelled_per_labelled, cfg.seed)
                     if d.sampling == "balanced" else self.frames)
        extra_state = {"loss": supervised, **{f"term_{name}": module for name, module in stateful.items()}}
        return FitPlan(StudentWithAdapters(self.student, terms), objective, train_set, self.evaluator,
                       self.test_evaluator, extra_state=extra_state,
                       artifact=Artifact(self.student, cfg.model, cfg.data.preprocess))

    def banner(self) -> str:
        cfg, ctx, d, frames = self.cfg, self.ctx, self.cfg.distill, self.frames
        unlabelled = len(frames.unlabelled) if frames.unlabelled is not None else 0
        balanced = d.sampling == "balanced" and unlabelled and d.unlabelled_per_labelled
        batches = (f"{cfg.batch_size} labelled + {cfg.batch_size * d.unlabelled_per_labelled} unlabelled "
                   "frames a step" if balanced else f"batches of {cfg.batch_size} frames")
        return (f"student {cfg.model.backbone} + {cfg.model.head} ({self.origin}) <- teacher {d.teacher}; "
                f"{len(frames.labelled)} labelled + {unlabelled} unlabelled frames, "
                f"{'cached' if d.cache_dir else 'live'} teacher, {ctx.world_size} process(es) "
                f"on {ctx.device}, {batches}; {evaluation_sizes(self.evaluator, self.test_evaluator)}")

    def finish(self, summary: dict) -> dict:
        """runs/<name>/student.pt (rank 0, training finished); its path joins the summary."""
        finished = self.ctx.is_main and not summary["interrupted"]
        exported = write_student(self.cfg, self.student, summary, self.teacher_sha256) if finished else None
        if exported is not None:
            summary["student"] = str(exported)
            print(f"[{self.cfg.name}] student checkpoint for export: {exported}")
        return summary
