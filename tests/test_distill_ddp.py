"""Distillation gets the loop's DDP and resume for free, adapters included: two gloo processes train
the student *and* the feature/channel adapters exactly as one process with the same global batch,
and an interrupted run resumes to the same weights. Tiny conv nets keep it fast."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.multiprocessing as mp
from ddp_support import FailAt, ddp_worker, free_port
from torch import nn
from torch.utils.data import Dataset

from marsedge.data.preprocess import PreprocessSpec
from marsedge.distill.config import DistillConfig, DistillSection
from marsedge.distill.objective import DistillObjective, StudentWithAdapters, build_terms
from marsedge.distill.teacher import FrozenTeacher, stage_channels
from marsedge.models.build import ModelConfig
from marsedge.models.checkpoints import load_checkpoint
from marsedge.train.engine.distributed import DistContext
from marsedge.train.engine.loop import build_train_loader, fit
from marsedge.train.engine.state import Artifact
from marsedge.train.losses import CrossEntropyLoss

SIZE = 16
SPEC = PreprocessSpec(height=SIZE, width=SIZE)
SECTION = dict(teacher="unused", kd_weight=1.0, cwd_weight=0.5, feature_weight=0.5,
               feature_pairs={"low": "low"})


class TinySeg(nn.Module):
    """A two-conv segmenter with the zoo's forward_features contract (no BatchNorm: exact DDP match)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_classes=3)
        self.low = nn.Conv2d(1, width, 3, padding=1)
        self.cls = nn.Conv2d(width, 3, 1)

    def forward_features(self, x):
        low = torch.relu(self.low(x))
        return self.cls(low), {"low": low, "head": low}

    def forward(self, x):
        return self.forward_features(x)[0]


class Frames(Dataset):
    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(1)
        self.images = torch.rand(n, 1, SIZE, SIZE, generator=g)
        self.labels = (self.images[:, 0] * 3).long().clamp(max=2)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "index": i}


def initial_models(ctx: DistContext) -> tuple[FrozenTeacher, StudentWithAdapters]:
    """The seeded teacher and the untrained student with its adapters, the same in every run."""
    torch.manual_seed(0)
    teacher = FrozenTeacher(TinySeg(8), SPEC, ctx.device)
    student = TinySeg(4)
    terms = build_terms(DistillSection(**SECTION), stage_channels(student, 1), teacher.channels, 3)
    return teacher, StudentWithAdapters(student, terms)


def run(tmp_path, name: str, ctx: DistContext, batch_size: int, resume=False, stop_at=None) -> dict:
    cfg = DistillConfig(name=name, seed=0, epochs=2, batch_size=batch_size, num_workers=0)
    cfg.run.out_dir, cfg.run.progress, cfg.optim.lr = str(tmp_path), False, 0.1
    cfg.distill = DistillSection(**SECTION)
    teacher, model = initial_models(ctx)
    # the first-step report (a gradient on the logits outside the backward pass) must not disturb DDP
    objective = DistillObjective(cfg.distill, CrossEntropyLoss(), teacher, report_first_step=True)
    if stop_at is not None:
        objective = FailAt(objective, stop_at)
    return fit(cfg, model, objective, build_train_loader(Frames(), cfg, ctx),
               ctx=ctx, artifact=Artifact(model.student, ModelConfig(num_classes=3), SPEC), resume=resume)


def trained(path) -> dict[str, torch.Tensor]:
    """Student and adapter weights of a run (the wrapper's state, kept for resume)."""
    return load_checkpoint(path).extra["train"]["model"]


def _ddp_train(ctx, tmp_path) -> None:
    run(tmp_path, "ddp", ctx, batch_size=4)


def test_ddp_trains_student_and_adapters_like_one_process(tmp_path):
    single = run(tmp_path, "single", DistContext(), batch_size=8)
    mp.spawn(ddp_worker, args=(2, free_port(), _ddp_train, tmp_path), nprocs=2, join=True)
    a, b = trained(tmp_path / "single" / "last.pt"), trained(tmp_path / "ddp" / "last.pt")
    assert single["step"] == 4
    start = initial_models(DistContext())[1].state_dict()
    adapters = [k for k in a if k.startswith("terms.feature.adapters")]
    assert adapters and all(not torch.equal(a[k], start[k]) for k in adapters)  # the adapters trained
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)


def test_interrupted_distillation_resumes_exactly(tmp_path):
    full = run(tmp_path, "full", DistContext(), batch_size=4)
    cut = run(tmp_path, "cut", DistContext(), batch_size=4, stop_at=3)
    assert cut["interrupted"] and cut["step"] == 3
    resumed = run(tmp_path, "cut", DistContext(), batch_size=4, resume=True)
    assert resumed["step"] == full["step"] == 8
    a, b = trained(tmp_path / "full" / "last.pt"), trained(tmp_path / "cut" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
