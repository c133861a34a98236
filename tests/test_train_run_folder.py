"""The run folder as its owner: an earlier run is never written over without --overwrite, a live
run holds its folder, --resume continues only the same work (the keys that may change are recorded,
any other change is one line naming the keys), a failed checkpoint write says which file and why
and keeps the old checkpoint, and SIGTERM stops a run the way Ctrl-C does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from edge_run_support import mount_tmpfs, unmount
from test_train_protocol import TEACHER_YAML, TINY, Frames, make_cfg
from torch import nn

from marsedge.errors import WriteError
from marsedge.models.build import ModelConfig
from marsedge.models.checkpoints import load_checkpoint
from marsedge.ownership import OutputLock
from marsedge.train import cli
from marsedge.train.engine.distributed import DistContext
from marsedge.train.engine.loop import build_train_loader, fit
from marsedge.train.engine.state import Artifact
from marsedge.train.losses import CrossEntropyLoss
from marsedge.train.supervised import SegmentationEvaluator, build_eval_loader

REPO = Path(__file__).resolve().parents[1]


def train(root, out, *extra) -> list[str]:
    return ["--config", TEACHER_YAML, f"data.root={root}", f"run.out_dir={out}", *TINY, "name=c1",
            "run.max_steps=1", *extra]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_finished_run_is_refused_and_resume_changes_only_the_listed_keys(tiny_ai4mars, tmp_path, capsys):
    assert cli.main(train(tiny_ai4mars, tmp_path)) == 0
    run = tmp_path / "c1"
    best, metrics = (run / "best.pt").read_bytes(), (run / "metrics.jsonl").read_bytes()
    config = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert cli.main(train(tiny_ai4mars, tmp_path)) == 2  # neither --resume nor --overwrite
    err = one_line(capsys)
    assert str(run) in err and "--resume" in err and "--overwrite" in err
    assert (run / "best.pt").read_bytes() == best and (run / "metrics.jsonl").read_bytes() == metrics
    assert cli.main(train(tiny_ai4mars, tmp_path, "--resume", "--overwrite")) == 2  # they contradict
    assert "pass one of them" in one_line(capsys)

    changed = ("optim.lr=0.5", "data.preprocess.height=96")
    assert cli.main(train(tiny_ai4mars, tmp_path, *changed, "--resume")) == 2
    err = one_line(capsys)
    assert "optim.lr 0.004 -> 0.5" in err and "data.preprocess.height 64 -> 96" in err
    assert "may change only name, run.out_dir, epochs, run.max_steps" in err
    assert cli.main(train(tiny_ai4mars, tmp_path, "model.backbone=r18_0.5x_sk0", "--resume")) == 2
    assert "model.backbone 'r18_0.25x_sk0' -> 'r18_0.5x_sk0'" in one_line(capsys)
    assert (run / "config.yaml").read_text() == config and not (run / "config_history.jsonl").exists()

    assert cli.main(train(tiny_ai4mars, tmp_path, "run.max_steps=2", "run.log_every=2", "--resume")) == 0
    assert (run / "config.yaml").read_text() == config  # what the first steps ran with stays
    history = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert history == [{"step": 1, "changed": {"run.log_every": {"from": 1, "to": 2},
                                               "run.max_steps": {"from": 1, "to": 2}}}]
    assert load_checkpoint(run / "last.pt").extra["train"]["step"] == 2
    # the next resume compares with the config in force (max_steps 2), not with config.yaml alone
    assert cli.main(train(tiny_ai4mars, tmp_path, "run.max_steps=2", "run.log_every=2", "--resume")) == 0
    assert len((run / "config_history.jsonl").read_text().splitlines()) == 1
    # a run recorded before a key existed ran at that key's default: a resume does not count it changed
    assert "  ema: null\n" in config
    (run / "config.yaml").write_text(config.replace("  ema: null\n", ""))
    assert cli.main(train(tiny_ai4mars, tmp_path, "run.max_steps=2", "run.log_every=2", "--resume")) == 0
    assert cli.main(train(tiny_ai4mars, tmp_path, "run.max_steps=2", "run.log_every=2", "run.ema=0.9",
                          "--resume")) == 2
    assert "run.ema None -> 0.9" in one_line(capsys)

    bare = tmp_path / "bare"  # a checkpoint with no run folder around it: its model is still checked
    bare.mkdir()
    (bare / "last.pt").write_bytes((run / "last.pt").read_bytes())
    assert cli.main(train(tiny_ai4mars, tmp_path, "name=other", "model.backbone=r18_0.5x_sk0",
                          "--resume", str(bare / "last.pt"))) == 1
    assert "holds another model (model.backbone 'r18_0.25x_sk0' -> 'r18_0.5x_sk0')" in one_line(capsys)

    (run / "stale.txt").write_text("from the earlier run")
    assert cli.main(train(tiny_ai4mars, tmp_path, "--overwrite")) == 0
    assert not (run / "stale.txt").exists() and not (run / "config_history.jsonl").exists()
    assert load_checkpoint(run / "last.pt").extra["train"]["step"] == 1


def test_a_live_run_holds_its_folder(tiny_ai4mars, tmp_path, capsys):
    with OutputLock(tmp_path / "c1", "finetune"):
        assert cli.main(train(tiny_ai4mars, tmp_path)) == 1
    err = one_line(capsys)
    assert "in use by a running command" in err and f"finetune pid {os.getpid()}" in err
    assert not (tmp_path / "c1" / "config.yaml").exists()


class WideNet(nn.Module):
    """A 1x1 segmenter with a large unused buffer, so its checkpoint needs a few hundred KiB."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.register_buffer("ballast", torch.zeros(64 * 1024))

    def forward(self, x):
        return self.conv(x)


def _fit_wide(cfg, resume=False):
    torch.manual_seed(0)
    model, ctx = WideNet(), DistContext()
    val = SegmentationEvaluator({"val": build_eval_loader(Frames(4, seed=2), 4, ctx)}, 2, confusion_png=False)
    objective = lambda m, batch, state: (CrossEntropyLoss()(m(batch["image"]), batch["label"]), {})  # noqa: E731
    return fit(cfg, model, objective, build_train_loader(Frames(8, seed=1), cfg, ctx), evaluator=val, ctx=ctx,
               artifact=Artifact(model, ModelConfig(num_classes=2), cfg.data.preprocess), resume=resume)


def test_a_full_disk_while_writing_last_pt_says_so_and_keeps_the_old_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    mount_tmpfs(disk, size="2m")
    try:
        cfg = make_cfg(disk, "full")
        cfg.epochs = 1
        _fit_wide(cfg)
        last = disk / "full" / "last.pt"
        before = last.read_bytes()
        assert len(before) > 256 * 1024
        # fill the disk up to 64 KiB: the logs still fit, a new last.pt does not
        with open(disk / "filler", "wb") as f:
            while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > 64 * 1024:
                f.write(b"\0" * 4096)
                f.flush()
        cfg.epochs = 2
        with pytest.raises(WriteError) as caught:
            _fit_wide(cfg, resume=True)
        assert str(caught.value) == f"cannot write {last}: No space left on device"
        assert caught.value.exit_code == 1
        assert last.read_bytes() == before
        assert not [p for p in last.parent.iterdir() if p.name.startswith(".last")]  # no temp file left
    finally:
        unmount(disk)


def test_sigterm_stops_a_run_like_ctrl_c_and_resume_continues_it(tiny_ai4mars, tmp_path, capsys):
    args = train(tiny_ai4mars, tmp_path, "run.max_steps=null", "epochs=50")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    started = tmp_path / "c1" / "config.yaml"
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # training has started: in the first epoch (it has 50)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in out and "resume with --resume" in out
    step = load_checkpoint(tmp_path / "c1" / "last.pt").extra["train"]["step"]
    assert cli.main(train(tiny_ai4mars, tmp_path, "run.max_steps=null", "epochs=1", "--resume")) == 0
    assert load_checkpoint(tmp_path / "c1" / "last.pt").extra["train"]["step"] >= step


def test_resume_of_a_run_that_never_checkpointed_says_so(tiny_ai4mars, tmp_path, capsys):
    run = tmp_path / "c1"
    run.mkdir()
    (run / "config.yaml").write_text("name: c1\n")  # what a run killed before its first checkpoint leaves
    assert cli.main(train(tiny_ai4mars, tmp_path)) == 2
    assert "stopped before its first checkpoint" in one_line(capsys)
    assert cli.main(train(tiny_ai4mars, tmp_path, "--resume")) != 0
    err = one_line(capsys)
    assert "no earlier run" not in err and "stopped before its first checkpoint" in err
