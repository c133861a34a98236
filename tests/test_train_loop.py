"""The shared training loop: DDP equals one process, accumulation equals a big batch, and a run
that is interrupted (Ctrl-C or a crash) and resumed ends exactly where an uninterrupted run does.

A tiny convnet on 16x16 in-memory frames keeps each run under a second; DDP is real
torch.distributed with gloo on CPU, two processes started with torch.multiprocessing.spawn.
"""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from ddp_support import FailAt, ddp_worker, free_port
from torch import nn
from torch.utils.data import Dataset

from marsedge.errors import ModelError
from marsedge.models.build import ModelConfig
from marsedge.models.checkpoints import load_checkpoint
from marsedge.train.config import TrainConfig
from marsedge.train.engine.distributed import DistContext
from marsedge.train.engine.loop import build_train_loader, fit
from marsedge.train.engine.state import Artifact
from marsedge.train.losses import CrossEntropyLoss
from marsedge.train.supervised import SegmentationEvaluator, build_eval_loader

SIZE = 16


class Frames(Dataset):
    """Deterministic frames whose label is a threshold of the smoothed image (every pixel labelled,
    so the pixel-mean loss of a half batch is exactly half the full batch's sum)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 1, SIZE, SIZE, generator=g)
        smooth = nn.functional.avg_pool2d(self.images, 3, stride=1, padding=1)
        self.labels = (smooth > 0.45).long() + (smooth > 0.55).long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i, 0], "index": i}


class TinyNet(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Dropout2d(dropout),
                                  nn.Conv2d(8, 3, 1))

    def forward(self, x):
        return self.body(x)


def ce_objective(model, batch, state):
    loss = CrossEntropyLoss()(model(batch["image"]), batch["label"])
    return loss, {}


def make_cfg(tmp_path, name: str, **kw) -> TrainConfig:
    cfg = TrainConfig(name=name, seed=3, epochs=kw.pop("epochs", 2), batch_size=kw.pop("batch_size", 8),
                      accumulate=kw.pop("accumulate", 1), num_workers=0)
    cfg.run.out_dir = str(tmp_path)
    cfg.run.progress = False
    cfg.run.log_every = 1
    cfg.optim.lr = 0.1
    cfg.optim.weight_decay = 1e-3
    for key, value in kw.items():
        setattr(cfg.run, key, value)
    return cfg


def run_fit(cfg, ctx, dropout=0.0, objective=ce_objective, resume=False, evaluate=True):
    torch.manual_seed(0)
    model = TinyNet(dropout)
    loader = build_train_loader(Frames(32, seed=1), cfg, ctx)
    evaluator = None
    if evaluate:
        test = build_eval_loader(Frames(8, seed=2), 4, ctx)
        evaluator = SegmentationEvaluator({"test": test}, num_classes=3, confusion_png=False)
    artifact = Artifact(model, ModelConfig(num_classes=3), cfg.data.preprocess)  # describes the file only
    return fit(cfg, model, objective, loader, evaluator=evaluator, ctx=ctx, artifact=artifact, resume=resume)


def weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def _ddp_train(ctx, tmp_path) -> None:
    run_fit(make_cfg(tmp_path, "ddp", batch_size=4), ctx)


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # one process, batch 8  vs  two gloo processes, batch 4 each: same samples in every step
    single = run_fit(make_cfg(tmp_path, "single", batch_size=8), DistContext())
    mp.spawn(ddp_worker, args=(2, free_port(), _ddp_train, tmp_path), nprocs=2, join=True)
    a, b = weights(tmp_path / "single" / "last.pt"), weights(tmp_path / "ddp" / "last.pt")
    assert single["step"] == 8  # 2 epochs x 32 frames / 8
    for key in a:
        # float32 all-reduce sums in another order: agreement to ~1e-6 relative; 1e-5 allowed
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
    assert not torch.equal(a["body.0.weight"], TinyNet().body[0].weight)  # it did train


def test_accumulation_matches_the_big_batch(tmp_path):
    run_fit(make_cfg(tmp_path, "big", batch_size=8), DistContext(), evaluate=False)
    run_fit(make_cfg(tmp_path, "acc", batch_size=4, accumulate=2), DistContext(), evaluate=False)
    a, b = weights(tmp_path / "big" / "last.pt"), weights(tmp_path / "acc" / "last.pt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_ctrl_c_then_resume_matches_an_uninterrupted_run(tmp_path):
    shape = dict(epochs=3, accumulate=2, batch_size=4)
    full = run_fit(make_cfg(tmp_path, "full", **shape), DistContext(), dropout=0.2)
    cfg = make_cfg(tmp_path, "cut", **shape)
    cut = run_fit(cfg, DistContext(), dropout=0.2, objective=FailAt(ce_objective, 6))  # mid-epoch 2
    assert cut["interrupted"] and cut["step"] == 6
    resumed = run_fit(cfg, DistContext(), dropout=0.2, resume=True)
    assert resumed["step"] == full["step"] == 12
    assert resumed["last_metrics"]["miou"] == full["last_metrics"]["miou"]
    assert resumed["last_metrics"]["pixel_accuracy"] == full["last_metrics"]["pixel_accuracy"]
    assert resumed["best"] == full["best"]
    a, b = weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "cut" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the logs read as one run: one eval record per epoch, steps increasing
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    evals = [line for line in lines if '"eval"' in line]
    assert len(evals) == 3


@pytest.mark.parametrize("every, fail_at, saved_at", [(3, 7, 6), (0, 5, 4)], ids=["periodic", "epoch-end"])
def test_crash_resumes_from_the_last_checkpoint(tmp_path, every, fail_at, saved_at):
    # 4 steps per epoch: a periodic checkpoint mid-epoch 2, or the one written at the end of epoch 1
    full = run_fit(make_cfg(tmp_path, "full", epochs=2), DistContext(), dropout=0.2)
    cfg = make_cfg(tmp_path, "crash", epochs=2, checkpoint_every=every)
    with pytest.raises(RuntimeError, match="simulated"):
        run_fit(cfg, DistContext(), dropout=0.2, objective=FailAt(ce_objective, fail_at, RuntimeError))
    assert load_checkpoint(tmp_path / "crash" / "last.pt").extra["train"]["step"] == saved_at
    resumed = run_fit(cfg, DistContext(), dropout=0.2, resume=True)
    assert resumed["last_metrics"]["miou"] == full["last_metrics"]["miou"]
    assert resumed["best"] == full["best"]  # early-stopping state survives the crash too
    a, b = weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "crash" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_best_checkpoint_and_early_stopping(tmp_path):
    cfg = make_cfg(tmp_path, "early", epochs=30, early_stop_patience=2, early_stop_metric="miou")
    cfg.optim.lr = 1e-6  # too small to improve: stops after patience evaluations without gain
    result = run_fit(cfg, DistContext())
    assert result["stopped_early"] and result["epoch"] < 30
    best = load_checkpoint(tmp_path / "early" / "best.pt")
    assert best.extra["train"]["epoch"] == result["best"]["epoch"]
    assert (tmp_path / "early" / "config.yaml").is_file() and (tmp_path / "early" / "log.csv").is_file()


def test_resume_without_a_checkpoint_fails_naming_the_file(tmp_path):
    with pytest.raises(ModelError, match="last.pt"):
        run_fit(make_cfg(tmp_path, "none"), DistContext(), resume=True)


@pytest.mark.parametrize("optimizer", ["adamw", "lars"])
def test_resume_is_exact_for_every_optimizer(tmp_path, optimizer):
    full_cfg, cut_cfg = make_cfg(tmp_path, "full"), make_cfg(tmp_path, "cut")
    for cfg in (full_cfg, cut_cfg):
        cfg.optim.name, cfg.optim.lr, cfg.optim.warmup_epochs = optimizer, 0.01, 0.5
    run_fit(full_cfg, DistContext(), evaluate=False)
    cut = run_fit(cut_cfg, DistContext(), objective=FailAt(ce_objective, 5), evaluate=False)
    assert cut["interrupted"]
    run_fit(cut_cfg, DistContext(), resume=True, evaluate=False)
    a, b = weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "cut" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
