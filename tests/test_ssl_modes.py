"""The three modes end to end on the tiny synthetic tree, through `marsedge train` config loading:
pretrain (plain and cluster-aware, via `marsedge cluster`), linear_eval on a class folder cut by
`marsedge class-folder`, and the three-stage semisup schedule. Tiny: r18 at width 0.25, 64 px."""

import json

import pytest
import torch

from marsedge.cli import main
from marsedge.errors import ConfigError
from marsedge.models.build import build_model
from marsedge.models.checkpoints import load_checkpoint, load_model, load_weights
from marsedge.train.config import load_train_config

BACKBONE = "r18_0.25x_sk0"
COMMON = [f"model.backbone={BACKBONE}", "model.head=deeplabv3plus", "model.head_channels=16",
          "data.preprocess.height=64", "data.preprocess.width=64", "num_workers=0",
          "run.progress=false", "run.device=cpu", "run.log_every=1", "seed=1"]


def write_yaml(path, text):
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def simclr_run(tiny_ai4mars, tmp_path_factory):
    """A 1-epoch SimCLR run on the MSL train frames (labels unused) and its checkpoint."""
    out = tmp_path_factory.mktemp("ssl_runs")
    cfg = write_yaml(out / "pretrain.yaml", f"""
mode: pretrain
name: simclr
epochs: 1
batch_size: 4
optim: {{name: lars, lr: 0.3, weight_decay: 1.0e-6, schedule: cosine, warmup_epochs: 0.5}}
pretrain:
  temperature: 0.5
  sources:
    - {{root: {tiny_ai4mars}, split: train, proportion: 0.75}}
    - {{root: {tiny_ai4mars}, split: m2020-train, proportion: 0.25}}
  frames_per_epoch: 8
""")
    overrides = COMMON + [f"run.out_dir={out}"]
    assert main(["train", "--config", str(cfg), *overrides]) == 0
    return out, cfg, overrides


def test_pretrain_checkpoint_feeds_finetuning(simclr_run):
    out, _, _ = simclr_run
    ckpt = load_checkpoint(out / "simclr" / "best.pt")
    assert any(k.startswith("projection.") for k in ckpt.state_dict)
    model = build_model({"backbone": BACKBONE, "head": "deeplabv3plus", "head_channels": 16})
    report = load_weights(model, ckpt.state_dict, part="backbone", strict=False)
    assert report.loaded and not report.missing  # every backbone tensor came from pretraining
    for key in report.loaded:
        assert torch.equal(model.state_dict()[key], ckpt.state_dict[key])
    log = [json.loads(line) for line in (out / "simclr" / "metrics.jsonl").read_text().splitlines()]
    assert any("pos_cos" in rec for rec in log)


def test_mixed_sources_follow_proportions(simclr_run):
    from marsedge.train.modes.pretrain import PretrainConfig, pretrain_frames

    _, cfg_path, overrides = simclr_run
    cfg = load_train_config(PretrainConfig, cfg_path, overrides)
    frames = pretrain_frames(cfg)
    assert len(frames) == 8
    assert sum(f.source == 0 for f in frames) == 6 and sum(f.source == 1 for f in frames) == 2


def test_cluster_then_cluster_aware_pretraining(simclr_run, tiny_ai4mars, tmp_path):
    out, cfg_path, overrides = simclr_run
    clusters = tmp_path / "clusters.json"
    assert main(["cluster", "--checkpoint", str(out / "simclr" / "best.pt"), "--k", "3", "--config",
                 str(cfg_path), *overrides, "-o", str(clusters)]) == 0
    data = json.loads(clusters.read_text())
    assert data["k"] == 3 and sum(data["sizes"]) == len(data["clusters"])
    assert set(data["clusters"].values()) == {0, 1, 2}
    aware = overrides + ["name=aware", f"pretrain.clusters={clusters}", "pretrain.num_clusters=3"]
    assert main(["train", "--config", str(cfg_path), *aware]) == 0
    assert (out / "aware" / "best.pt").is_file()
    # a K that does not match the file is refused before training
    from marsedge.train.modes import resolve_mode
    from marsedge.train.modes.pretrain import PretrainConfig

    bad = load_train_config(PretrainConfig, cfg_path, aware[:-1] + ["name=k5", "pretrain.num_clusters=5"])
    with pytest.raises(ConfigError, match="num_clusters"):
        resolve_mode("pretrain").run(bad)


def test_class_folder_and_linear_eval(simclr_run, tiny_ai4mars, tmp_path):
    out, _, _ = simclr_run
    folder = tmp_path / "classes"
    assert main(["class-folder", "--data", str(tiny_ai4mars), "--out", str(folder), "--crop", "32"]) == 0
    train_classes = sorted(p.name for p in (folder / "train").iterdir())
    assert len(train_classes) >= 2
    cfg = write_yaml(tmp_path / "linear.yaml", f"""
mode: linear_eval
name: probe
epochs: 3
batch_size: 8
optim: {{name: adamw, lr: 0.01, weight_decay: 0.0, schedule: constant}}
init: {{checkpoint: {out / "simclr" / "best.pt"}}}
linear_eval: {{folder: {folder}, label_fraction: 0.5}}
run: {{early_stop_metric: accuracy}}
""")
    overrides = COMMON + [f"run.out_dir={tmp_path}"]
    assert main(["train", "--config", str(cfg), *overrides]) == 0
    evals = [json.loads(line) for line in (tmp_path / "probe" / "metrics.jsonl").read_text().splitlines()]
    accuracies = [r["accuracy"] for r in evals if "accuracy" in r]
    assert accuracies and all(0.0 <= a <= 1.0 for a in accuracies)


def test_semisup_three_stages(tiny_ai4mars, tmp_path):
    cfg = write_yaml(tmp_path / "semisup.yaml", f"""
mode: semisup
name: semi
epochs: 3
batch_size: 4
data: {{root: {tiny_ai4mars}, test_splits: [gold-min1], max_train: 4, max_test: 2}}
optim: {{name: sgd, lr: 0.01, schedule: poly}}
semisup:
  queue_length: 4
  pseudo_threshold: 0.2
  unlabelled_split: unlabelled
  stages:
    - {{name: contrastive, epochs: 1, ce: false, contrastive_weight: 1.0}}
    - {{name: joint, epochs: 1, ce: true, contrastive_weight: 0.001}}
    - {{name: pseudo, epochs: 1, ce: true, contrastive_weight: 0.001, pseudo: true}}
""")
    overrides = COMMON + [f"run.out_dir={tmp_path}"]
    assert main(["train", "--config", str(cfg), *overrides]) == 0
    records = [json.loads(line) for line in (tmp_path / "semi" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    first, last = min(r["epoch"] for r in train), max(r["epoch"] for r in train)
    assert all("ce" not in r and "contrastive" in r for r in train if r["epoch"] == first)  # stage 1
    assert all("ce" in r and "pseudo_pixels" not in r for r in train if first < r["epoch"] < last)  # 2
    assert all("pseudo_pixels" in r for r in train if r["epoch"] == last)  # stage 3
    model, _ = load_model(tmp_path / "semi" / "best.pt")  # a plain segmentation checkpoint
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 6, 64, 64)
    bank = load_checkpoint(tmp_path / "semi" / "last.pt").extra["train"]["extra_state"]["memory_bank"]
    assert bank["queue"].shape == (6, 4, 128) and int(bank["filled"].max()) >= 1
