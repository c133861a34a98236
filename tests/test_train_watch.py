"""Watching a run: train.py through a pipe prints a progress line every run.log_every steps and one
line per evaluation; TensorBoard event files read back with TensorBoard's own reader; curves.png;
epoch checkpoint history; summary.json; the EMA of the weights scored beside them, best.pt taking
the better, and `marsedge export` of last.pt exporting the average."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_protocol import Frames  # 16 px frames, labelled by brightness
from torch import nn

from marsedge.models.build import ModelConfig
from marsedge.models.checkpoints import load_checkpoint, load_model
from marsedge.train.config import TrainConfig
from marsedge.train.engine import progress
from marsedge.train.engine.distributed import DistContext
from marsedge.train.engine.ema import WeightEMA
from marsedge.train.engine.loop import build_train_loader, fit
from marsedge.train.engine.state import Artifact
from marsedge.train.losses import CrossEntropyLoss

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo" / "teacher.yaml")
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def test_train_py_through_a_pipe(tiny_ai4mars, tmp_path):
    """3 epochs of 2 steps (8 frames, batch 4), a line every 2 steps, an evaluation per epoch."""
    cmd = [sys.executable, str(REPO / "train.py"), "--config", DEMO, f"data.root={tiny_ai4mars}",
           f"run.out_dir={tmp_path}", "name=watched", "epochs=3", "batch_size=4", "data.max_train=8",
           "model.backbone=r18_0.25x_sk0", "model.head_channels=16", "loss.name=ce", "num_workers=0",
           "data.preprocess.height=64", "data.preprocess.width=64", "run.amp=none", "run.progress=true",
           "run.log_every=2", "run.ema=0.9", "run.keep_checkpoints=2", f"run.tensorboard={HAS_TENSORBOARD}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300,  # stdout: a pipe, not a terminal
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    steps = [line for line in lines if line.startswith("[watched] step ")]
    assert [re.match(r"\[watched\] step (\d+)/6 epoch (\d)/3 ", line).groups() for line in steps] == [
        ("2", "1"), ("4", "2"), ("6", "3")]
    assert all(re.search(r"\| loss \d\.\d{4} \| lr \S+ \| [\d.]+ img/s \| data \d+% \| ETA \S+$", line)
               for line in steps), steps
    evals = [line for line in lines if line.startswith("[watched] eval epoch ")]
    assert len(evals) == 3 and "best.pt written" in evals[0], evals
    assert all(re.search(r"val miou \d\.\d{4} \(ema \d\.\d{4}\) \| rarest: .+ \| best \d\.\d{4} at epoch \d "
                         r"\((raw|ema)\) \| best\.pt (written|kept)$", line) for line in evals), evals
    assert "it/s" not in out.stdout + out.stderr  # no tqdm bar off a terminal

    run = tmp_path / "watched"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 6 and summary["timing"]["images"] == 24
    assert summary["timing"]["images_per_s"] > 0 and summary["export"] == f"marsedge export {run / 'best.pt'}"
    assert summary["artefacts"]["epoch_checkpoints"] == [str(run / "epoch_002.pt"), str(run / "epoch_003.pt")]
    assert sorted(p.name for p in run.glob("epoch_*.pt")) == ["epoch_002.pt", "epoch_003.pt"]  # 001 removed
    assert summary["selected_on"]["weights"] in ("raw", "ema") and summary["test_metrics"]["miou"] >= 0
    assert f"[watched] export: marsedge export {run / 'best.pt'}" in lines
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("ema/miou" in r and r["weights"] in ("raw", "ema") for r in records if r["kind"] == "eval")

    if HAS_TENSORBOARD:
        _check_tensorboard(run / "tensorboard")
    _check_export_takes_the_average(run / "last.pt", tmp_path / "last.onnx")


def _check_tensorboard(folder: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/images_per_s", "val/miou", "val_ema/miou",
            "val/iou/soil"} <= set(tags["scalars"]), tags["scalars"]
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6]
    assert [e.step for e in events.Scalars("val/miou")] == [2, 4, 6]
    assert {"val/confusion", "val/overlay_0"} <= set(tags["images"])
    overlay = events.Images("val/overlay_0")[-1]
    assert (overlay.width, overlay.height) == (3 * 64, 64)  # image | label | prediction


def _check_export_takes_the_average(last: Path, onnx_path: Path) -> None:
    import onnxruntime as ort

    from marsedge.deploy.export import export

    ckpt = load_checkpoint(last)
    export(last, onnx_path, verify_frames=1, simplify=False)
    x = torch.rand(1, 1, 64, 64)
    onnx_logits = ort.InferenceSession(str(onnx_path)).run(None, {"image": x.numpy()})[0]
    model, _ = load_model(last)
    with torch.no_grad():
        raw = model(x).numpy()
        model.load_state_dict(ckpt.extra["train"]["ema"]["weights"])
        average = model(x).numpy()
    assert np.abs(onnx_logits - average).max() < 1e-3 < np.abs(onnx_logits - raw).max()


# ---- the EMA inside the loop -----------------------------------------------------------------------

class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 2, 1))

    def forward(self, x):
        return self.body(x)


class DistanceFromStart:
    """A val score that grows as training moves the weights away from where they started; the
    average lags behind them, so "max" selects the trained weights and "min" the average."""

    def __init__(self, model: nn.Module) -> None:
        self.start = model.body[0].weight.detach().clone()

    def __call__(self, model, state) -> dict:
        return {"miou": float((model.body[0].weight - self.start).norm())}


def ce(model, batch, state):
    return CrossEntropyLoss()(model(batch["image"]), batch["label"]), {}


def fit_bnnet(tmp_path, name: str, epochs: int = 2, objective=ce, resume: bool | Path = False, **run) -> dict:
    """BNNet on 16 in-memory frames (batch 4: 4 steps an epoch), scored by DistanceFromStart."""
    cfg = TrainConfig(name=name, seed=3, epochs=epochs, batch_size=4, num_workers=0)
    cfg.optim.lr, cfg.run.out_dir, cfg.run.curves, cfg.run.log_every = 0.1, str(tmp_path), False, 1
    for key, value in run.items():
        setattr(cfg.run, key, value)
    torch.manual_seed(0)
    model = BNNet()
    ctx = DistContext()
    loader = build_train_loader(Frames(16, seed=1), cfg, ctx)
    return fit(cfg, model, objective, loader, evaluator=DistanceFromStart(model), ctx=ctx, resume=resume,
               artifact=Artifact(model, ModelConfig(num_classes=2), cfg.data.preprocess))


def test_the_average_is_scored_beside_the_weights_and_best_pt_holds_the_better(tmp_path):
    chosen = set()
    for mode in ("max", "min"):
        summary = fit_bnnet(tmp_path, mode, epochs=4, progress=False, ema=0.7, keep_checkpoints=9,
                            early_stop_mode=mode)
        run = tmp_path / mode
        records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        evals = [r for r in records if r["kind"] == "eval"]
        for r in evals:
            ema_wins = r["ema/miou"] > r["miou"] if mode == "max" else r["ema/miou"] < r["miou"]
            assert r["weights"] == ("ema" if ema_wins else "raw") and r["ema/miou"] != r["miou"]
        epoch = summary["best"]["epoch"]
        record = evals[epoch - 1]
        weights = record["weights"]
        assert summary["selected_on"]["weights"] == weights
        assert summary["best"]["value"] == record["ema/miou" if weights == "ema" else "miou"]
        best, kept = load_checkpoint(run / "best.pt"), load_checkpoint(run / f"epoch_{epoch:03d}.pt")
        expected = kept.extra["train"]["ema"]["weights"] if weights == "ema" else kept.state_dict
        assert all(torch.equal(best.state_dict[k], expected[k]) for k in expected)
        assert best.extra["selected_on"]["weights"] == weights
        if weights == "ema":  # training would continue from the trained weights, not the average
            raw = best.extra["train"]["model"]
            assert all(torch.equal(raw[k], kept.state_dict[k]) for k in kept.state_dict)
        chosen.add(weights)
    assert chosen == {"raw", "ema"}


def test_the_average_warms_up_copies_integer_buffers_and_swaps_back_on_error():
    net = BNNet()
    ema = WeightEMA(net, decay=0.99)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.body[1].num_batches_tracked.fill_(7)
    ema.update()  # first update: decay (1 + 0) / (10 + 0) = 0.1, not 0.99
    weight = "body.0.weight"
    assert torch.allclose(ema.average[weight], 0.1 * start[weight] + 0.9 * (start[weight] + 1))
    assert int(ema.average["body.1.num_batches_tracked"]) == 7 and ema.rate() == pytest.approx(2 / 11)
    trained = net.body[0].weight.detach().clone()
    with pytest.raises(RuntimeError), ema.swapped_in() as own:
        assert torch.equal(net.body[0].weight, ema.average[weight]) and torch.equal(own[weight], trained)
        raise RuntimeError("evaluation failed")
    assert torch.equal(net.body[0].weight, trained)


# ---- the lines ---------------------------------------------------------------------------------------

def test_the_evaluation_line_names_the_rarest_classes_and_the_selection():
    record = {"miou": 0.5, "val/iou": {"soil": 0.9, "bedrock": 0.6, "sand": None, "big rock": 0.1},
              "val/confusion": [[900, 10, 0, 0], [5, 300, 0, 0], [0, 0, 0, 0], [1, 0, 0, 20]],
              "ema/miou": 0.55, "ema/val/iou": {"soil": 0.9, "bedrock": 0.7, "sand": None, "big rock": 0.2},
              "ema/val/confusion": [[900, 10, 0, 0], [5, 300, 0, 0], [0, 0, 0, 0], [1, 0, 0, 20]],
              "weights": "ema"}
    assert progress.rarest(record) == [("big rock", 0.1), ("bedrock", 0.6)]  # sand: no val pixel
    line = progress.eval_line("t", 3, 10, 30, "miou", record, "ema", (0.55, 3, "ema"), True)
    assert line == ("[t] eval epoch 3/10 step 30: val miou 0.5000 (ema 0.5500) | rarest: big rock 0.2000, "
                    "bedrock 0.7000 | best 0.5500 at epoch 3 (ema) | best.pt written")
    assert progress.rarest({"top1": 0.5, "recall": {"a": 0.5, "b": 1.0}, "support": {"a": 4, "b": 2}}) == [
        ("b", 1.0), ("a", 0.5)]
    assert [progress.duration(s) for s in (None, 42, 312, 14700)] == ["?", "42s", "5m12s", "4h05m"]


def test_on_a_terminal_a_bar_with_the_run_eta_replaces_the_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda: True)
    fit_bnnet(tmp_path, "tty")
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "run ETA" in out  # the bar and its postfix
    assert "[tty] step " not in out and out.count("[tty] eval epoch ") == 2


def test_silent_with_progress_off_and_tensorboard_refused_without_its_package(tmp_path, capsys, monkeypatch):
    fit_bnnet(tmp_path, "quiet", progress=False)
    assert capsys.readouterr().out == ""
    from marsedge.errors import ConfigError
    from marsedge.train.config import load_train_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"run\.tensorboard.*marsedge\[tensorboard\]"):
        load_train_config(TrainConfig, DEMO, ["run.tensorboard=true"])


class CtrlCAt:
    """Ctrl-C at the `call`-th micro-batch."""

    def __init__(self, call: int) -> None:
        self.call, self.calls = call, 0

    def __call__(self, model, batch, state):
        self.calls += 1
        if self.calls == self.call:
            raise KeyboardInterrupt
        return ce(model, batch, state)


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="the tensorboard extra is not installed")
def test_a_resumed_run_continues_its_tensorboard_events_without_the_interrupted_tail(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cut = fit_bnnet(tmp_path, "cut", epochs=3, objective=CtrlCAt(7), progress=False, tensorboard=True,
                    keep_checkpoints=3)
    assert cut["interrupted"] and cut["step"] == 6
    # resumed from the end of epoch 1 (step 4): the interrupted run's events of steps 5 and 6 go
    epoch_1 = tmp_path / "cut" / "epoch_001.pt"
    fit_bnnet(tmp_path, "cut", epochs=3, progress=False, tensorboard=True, resume=epoch_1)
    events = EventAccumulator(str(tmp_path / "cut" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 13))
    assert [e.step for e in events.Scalars("val/miou")] == [4, 8, 12]


class RanksAgree(DistanceFromStart):
    """The score, and `agree`: 1.0 when every rank scores the very same weights and buffers."""

    def __call__(self, model, state) -> dict:
        import torch.distributed as dist

        flat = torch.cat([v.detach().double().flatten() for v in model.state_dict().values()])
        every = [torch.zeros_like(flat) for _ in range(state.ctx.world_size)]
        dist.all_gather(every, flat)
        return {**super().__call__(model, state), "agree": float(all(torch.equal(flat, v) for v in every))}


def _ddp_ema_train(ctx, out: Path) -> None:
    cfg = TrainConfig(name="ddp", seed=3, epochs=2, batch_size=4, num_workers=0)
    cfg.optim.lr, cfg.run.out_dir, cfg.run.curves, cfg.run.progress = 0.1, str(out), False, False
    cfg.run.ema = 0.7
    torch.manual_seed(0)
    model = BNNet()
    loader = build_train_loader(Frames(16, seed=1), cfg, ctx)
    fit(cfg, model, ce, loader, evaluator=RanksAgree(model), ctx=ctx,
        artifact=Artifact(model, ModelConfig(num_classes=2), cfg.data.preprocess))


def test_under_ddp_every_rank_scores_the_same_weights_and_average(tmp_path):
    """Each rank's BatchNorm statistics follow its own batches; both the trained weights and the
    average are scored as rank 0 holds them, on every rank."""
    import torch.multiprocessing as mp
    from ddp_support import ddp_worker, free_port

    mp.spawn(ddp_worker, args=(2, free_port(), _ddp_ema_train, tmp_path), nprocs=2, join=True)
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 2 and all(r["agree"] == 1.0 and r["ema/agree"] == 1.0 for r in evals), evals
