"""train.py end to end on the tiny synthetic AI4Mars tree, config checking, data composition,
class frequencies and starting weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marsedge.data.ai4mars import AI4MarsDataset
from marsedge.models.build import ModelConfig, build_model
from marsedge.models.checkpoints import load_checkpoint, load_model, save_checkpoint
from marsedge.train.cli import main
from marsedge.train.config import DataConfig, InitConfig, TrainConfig, load_train_config
from marsedge.train.supervised import class_frequencies, initialise, training_set

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo" / "teacher.yaml")


def tiny_overrides(root, out, name="t") -> list[str]:
    # the demo config at test size: its quarter-width ResNet-18 and plain CE keep these runs seconds long
    return [f"data.root={root}", f"run.out_dir={out}", f"name={name}", "epochs=2", "batch_size=4",
            "model.backbone=r18_0.25x_sk0", "loss.name=ce",
            "num_workers=0", "data.preprocess.height=64", "data.preprocess.width=64",
            "model.head_channels=16", "run.progress=false", "run.log_every=1"]


def test_train_py_writes_a_usable_run(tiny_ai4mars, tmp_path, capsys):
    overrides = tiny_overrides(tiny_ai4mars, tmp_path)
    code = main(["--config", DEMO, *overrides, "loss.name=inverse_frequency_recall"])
    assert code == 0
    run = tmp_path / "t"
    printed = capsys.readouterr().out
    assert "final test (fractions, scored once with best.pt): gold-min" in printed and " miou 0." in printed
    assert " val frames; test gold-min" in printed  # the banner says what it selects and scores on
    model, ckpt = load_model(run / "best.pt")  # weights_only load, model rebuilt from its config
    assert ckpt.preprocess == {"height": 64, "width": 64, "channels": 1, "gain": 1.5,
                               "bit_depth_mapping": "linear", "percentile_low": 0.5,
                               "percentile_high": 99.5, "colour_to_grey": "bt601"}
    assert [c["name"] for c in ckpt.class_table][:4] == ["soil", "bedrock", "sand", "big rock"]
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 6, 64, 64)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2]
    # selection evaluates val only; the test splits are scored once, at the end, with best.pt
    assert 0.0 <= evals[-1]["miou"] <= 1.0 and "val/iou" in evals[-1] and "gold-min3/iou" not in evals[-1]
    tests = json.loads((run / "test_metrics.json").read_text())
    assert "gold-min3/iou" in tests["metrics"] and [r["kind"] for r in records].count("test") == 1
    selected = load_checkpoint(run / "best.pt").extra["selected_on"]
    assert selected == tests["selected_on"] and selected["split"] == "val" and selected["metric"] == "miou"
    assert (run / "confusion_gold-min1.png").stat().st_size > 0
    # the recall loss's running counts are checkpointed for an exact resume
    assert "tp" in load_checkpoint(run / "last.pt").extra["train"]["extra_state"]["loss"]
    resolved = (run / "config.yaml").read_text()
    assert "inverse_frequency_recall" in resolved and str(tiny_ai4mars) in resolved


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "optim.lrr"),
    ("epochs=many", "epochs"),
    ("mode=pretrian", "mode"),
    ("loss.name=focal", "loss.name"),
    ("data.label_fraction=0", "data.label_fraction"),
    ("model.in_channels=3", "model.in_channels"),
])
def test_bad_config_fails_before_training(tiny_ai4mars, tmp_path, capsys, override, message):
    code = main(["--config", DEMO, *tiny_overrides(tiny_ai4mars, tmp_path), override])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()  # nothing was started


def test_bad_key_in_a_yaml_file_is_named(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"base: {DEMO}\ndata:\n  label_fractoin: 0.1\n")
    with pytest.raises(Exception, match=r"data\.label_fractoin.*label_fraction"):
        load_train_config(TrainConfig, path, [])


def test_base_config_is_merged(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"base: {DEMO}\nname: lf10\ndata:\n  label_fraction: 0.1\n")
    cfg = load_train_config(TrainConfig, path, ["optim.lr=0.5"])
    assert (cfg.name, cfg.data.label_fraction, cfg.optim.lr) == ("lf10", 0.1, 0.5)
    assert cfg.model.backbone == "r18_0.5x_sk0" and cfg.data.preprocess.height == 128  # from the base


def test_training_set_composition(tiny_ai4mars):
    mixed = DataConfig(root=str(tiny_ai4mars), train_splits=["train", "m2020-train"], m2020_fraction=0.5,
                       mixed_cap=8)
    missions = [item.mission for item in training_set(mixed, seed=0).items]
    assert missions.count("m2020") == 4 and missions.count("msl") == 4
    tenth = DataConfig(root=str(tiny_ai4mars), label_fraction=0.25, val_fraction=0.0)  # no val held out
    assert len(training_set(tenth, seed=0)) == 4  # 25% of the 16 MSL training frames
    assert training_set(tenth, seed=0).items == training_set(tenth, seed=0).items  # seeded


def test_class_frequencies_are_counted_once_and_cached(tiny_ai4mars, tmp_path):
    ds = AI4MarsDataset(tiny_ai4mars, "train")
    freq = class_frequencies(ds, 6, tmp_path)
    counts = np.zeros(6)
    for sample in ds:
        counts += np.bincount(sample.label.ravel(), minlength=256)[:6]
    np.testing.assert_allclose(freq, counts / counts.sum())
    (cached,) = tmp_path.glob("class_frequencies_*.json")
    data = json.loads(cached.read_text())
    data["frequencies"] = [1.0, 0, 0, 0, 0, 0]  # prove the second call reads the file
    cached.write_text(json.dumps(data))
    assert class_frequencies(ds, 6, tmp_path).tolist() == [1.0, 0, 0, 0, 0, 0]


def test_init_from_our_checkpoint_loads_the_backbone_only(tmp_path):
    cfg = ModelConfig(backbone="r18_0.25x_sk0", head="deeplabv3", head_channels=16)
    torch.manual_seed(1)
    source = build_model(cfg)
    save_checkpoint(tmp_path / "pre.pt", source, cfg, {"height": 64, "width": 64, "channels": 1, "gain": 1.5})
    torch.manual_seed(2)
    target = build_model(cfg)
    head_before = {k: v.clone() for k, v in target.head.state_dict().items()}
    initialise(target, InitConfig(checkpoint=str(tmp_path / "pre.pt"), format="marsedge"))
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[key], value)
    for key, value in head_before.items():
        assert torch.equal(target.head.state_dict()[key], value)


@pytest.mark.slow
def test_torchrun_two_processes(tiny_ai4mars, tmp_path):
    """The real launcher: torchrun sets env://, gloo on CPU, only rank 0 writes."""
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(REPO / "train.py"), "--config", DEMO,
           *tiny_overrides(tiny_ai4mars, tmp_path, "ddp"), "epochs=1", "run.confusion_png=false",
           "run.progress=true", "run.ema=0.9", "batch_size=2"]
    # faulthandler: a rank that aborts in C++ (SIGABRT) prints its Python stack, which torchrun's own
    # traceback would otherwise push out of the assertion message
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    ranks = [line for line in out.stderr.splitlines() if "torch/distributed/" not in line]
    assert out.returncode == 0, "\n".join(ranks[-60:])
    assert out.stdout.count("final test (") == 1  # rank 0 only
    best = load_checkpoint(tmp_path / "ddp" / "best.pt")
    assert best.extra["train"]["world_size"] == 2
    # progress through a pipe: a line per step (run.log_every=1) and one per evaluation, each once
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    steps = [line for line in out.stdout.splitlines() if line.startswith("[ddp] step ")]
    total = summary["steps"]
    assert total > 1 and [line.split()[2] for line in steps] == [f"{n}/{total}" for n in range(1, total + 1)]
    assert len([line for line in out.stdout.splitlines() if line.startswith("[ddp] eval epoch 1/1")]) == 1
    # the moving average, on both ranks, was scored and selected on like the weights
    assert best.extra["selected_on"]["weights"] == summary["selected_on"]["weights"] in ("raw", "ema")
    assert best.extra["train"]["ema"]["updates"] == total == summary["timing"]["images"] // 4


EDGE_STUDENT = REPO / "configs" / "demo" / "edge_student_512.yaml"
SHIPPED = [*sorted((REPO / "configs" / "teacher").glob("*.yaml")), Path(DEMO), EDGE_STUDENT]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_load_and_name_zoo_models(path):
    from marsedge.models.build import BACKBONES, HEADS

    cfg = load_train_config(TrainConfig, path, [])
    assert cfg.model.backbone in BACKBONES and cfg.model.head in HEADS
    names = {Path(DEMO): "demo_teacher", EDGE_STUDENT: "edge_student_256"}
    assert cfg.name == names.get(path, path.stem)  # runs/<name>


def test_init_from_a_torchvision_state_dict(tmp_path):
    cfg = ModelConfig(backbone="r18_0.25x_sk0", head="deeplabv3", head_channels=16)
    torch.manual_seed(1)
    source = build_model(cfg).backbone.state_dict()
    # torchvision names: no `stem.` prefix, plus a classifier that the import drops
    foreign = {k.removeprefix("stem."): v for k, v in source.items()}
    foreign["fc.weight"] = torch.zeros(10, 128)
    torch.save(foreign, tmp_path / "tv.pth")
    torch.manual_seed(2)
    target = build_model(cfg)
    initialise(target, InitConfig(checkpoint=str(tmp_path / "tv.pth"), format="torchvision"))
    for key, value in source.items():
        assert torch.equal(target.backbone.state_dict()[key], value), key
