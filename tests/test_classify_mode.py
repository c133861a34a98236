"""Modes `classify` and `classify_linear` end to end on a tiny synthetic MSL surface tree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from marsedge.errors import ConfigError
from marsedge.models.build import ModelConfig
from marsedge.models.checkpoints import load_checkpoint
from marsedge.models.classifier import build_classifier
from marsedge.synthetic.classes import ClassSynthOptions, generate_classes
from marsedge.train.config import load_train_config
from marsedge.train.engine.job import run_job
from marsedge.train.modes import resolve_mode
from marsedge.train.modes.classify_linear import ClassifyLinear, ClassifyLinearConfig

COMMON = ["num_workers=0", "run.device=cpu", "run.progress=false", "model.backbone=r18_0.25x_sk0"]


@pytest.fixture(scope="module")
def classes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("msl_classes")
    generate_classes(ClassSynthOptions(out=str(root), n=160, size=32, seed=0, unlabelled=6), progress=False)
    return root


class Separable(ClassifyLinear):
    """Linear evaluation on features that are one-hot class codes plus noise: a working protocol
    must find them."""

    def features(self, split: str) -> np.ndarray:
        targets = np.asarray(self.splits[split].targets)
        rng = np.random.default_rng(len(targets))
        return (3 * np.eye(16, dtype=np.float32)[targets] + rng.normal(0, 0.3, (len(targets), 16))).astype(
            np.float32
        )


class ShuffledLabels(Separable):
    def prepare(self) -> None:
        super().prepare()
        perm = np.random.default_rng(0).permutation(len(self.train_set.targets))
        self.train_set.targets = self.train_set.targets[perm]


def _linear_cfg(root, out, name, extra=()):
    return load_train_config(
        ClassifyLinearConfig,
        None,
        [
            f"name={name}",
            f"classify_linear.root={root}",
            f"run.out_dir={out}",
            "epochs=15",
            "batch_size=16",
            "optim.name=adamw",
            "optim.lr=0.01",
            "optim.schedule=constant",
            *COMMON,
            *extra,
        ],
    )


def test_linear_eval_separates_separable_features_and_not_shuffled_labels(classes_root, tmp_path):
    good = run_job(_linear_cfg(classes_root, tmp_path, "sep"), False, Separable)
    assert good["test_metrics"]["top1"] > 0.9
    written = json.loads((tmp_path / "sep" / "test_metrics.json").read_text())
    assert written["metrics"]["top1"] == pytest.approx(good["test_metrics"]["top1"])
    assert written["selected_on"]["split"] == "val" and good["label_fraction"] == 1.0
    confusion = written["metrics"]["confusion"]
    assert len(confusion) == 12 and sum(map(sum, confusion)) == 32
    shuffled = run_job(_linear_cfg(classes_root, tmp_path, "shuf"), False, ShuffledLabels)
    assert shuffled["test_metrics"]["top1"] < 0.6


def test_linear_eval_label_fraction_keeps_one_per_class(classes_root, tmp_path):
    summary = run_job(
        _linear_cfg(
            classes_root, tmp_path, "frac", ["classify_linear.label_fraction=0.1", "epochs=1", "batch_size=4"]
        ),
        False,
        Separable,
    )
    from marsedge.data.msl_surface import MSLSurfaceDataset

    counts = [c for c in MSLSurfaceDataset(classes_root, "train").class_counts() if c]
    assert summary["train_images"] == sum(max(1, round(0.1 * c)) for c in counts)


def _classify_cfg(root, out, name, objective):
    return load_train_config(
        resolve_mode("classify").config,
        None,
        [
            f"name={name}",
            "mode=classify",
            f"classify.root={root}",
            f"run.out_dir={out}",
            f"classify.objective={objective}",
            "epochs=1",
            "run.max_steps=2",
            "batch_size=8",
            "data.eval_batch_size=16",
            "data.preprocess.height=32",
            "data.preprocess.width=32",
            "data.preprocess.channels=3",
            "model.in_channels=3",
            "model.output_stride=32",
            *COMMON,
        ],
    )  # model.head and run.early_stop_metric: the defaults


def test_classify_full_trains_scores_test_and_feeds_linear_eval(classes_root, tmp_path, capsys):
    cfg = _classify_cfg(classes_root, tmp_path, "full", "full")
    summary = resolve_mode("classify").run(cfg)
    assert summary["step"] == 2 and cfg.model.num_classes == 12  # from the class map
    out = capsys.readouterr().out
    assert "test top-1" in out and "per-class recall: nearby surface" in out
    test = json.loads((tmp_path / "full" / "test_metrics.json").read_text())["metrics"]
    assert set(test["recall"]) == set(summary["classes"]) and 0 <= test["top1"] <= test["top5"] <= 1
    logs = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    train_logs = [r for r in logs if r["kind"] == "train"]
    evals = [r for r in logs if r["kind"] == "eval"]
    assert evals and "top1" in evals[-1] and "confusion" not in evals[-1]  # the val evaluator
    assert summary["selected_on"]["split"] == "val" and summary["test_metrics"]["top1"] == pytest.approx(
        test["top1"]
    )
    assert not train_logs or {"ce", "inter_class", "similarity"} <= set(train_logs[-1])
    # the checkpoint names the dataset's classes (the class map's order), not the terrain classes
    table = load_checkpoint(tmp_path / "full" / "best.pt").class_table
    assert [c["name"] for c in table] == summary["classes"] and [c["id"] for c in table] == list(range(12))
    # Ward's protocol on this run's frozen backbone
    lin = _linear_cfg(
        classes_root, tmp_path, "lin", [f"init.checkpoint={tmp_path / 'full' / 'best.pt'}", "epochs=1"]
    )
    summary = resolve_mode("classify_linear").run(lin)
    assert (tmp_path / "lin" / "test_metrics.json").is_file() and summary["train_images"] == 112


def test_classifier_builds_only_the_heads_its_objective_uses():
    cfg = ModelConfig(
        backbone="r18_0.25x_sk0", head="classifier", output_stride=32, num_classes=5, in_channels=3
    )
    ce = build_classifier(cfg)
    full = build_classifier(cfg, ("s", "u"))
    assert ce.head_s is None and ce.head_u is None
    x = torch.randn(2 + 2 * 3 + 2 * 1, 3, 32, 32)
    out = full.forward_streams(x, n_ce=2, n_s=3, n_u=1)
    assert out["logits"].shape == (2, 5) and out["z_s"].shape == (6, 128) and out["z_u"].shape == (2, 128)
    with pytest.raises(ConfigError, match="no eq. 2 head"):
        ce.forward_streams(x, n_ce=2, n_s=3)
    with pytest.raises(ConfigError, match="model.head must be 'classifier'"):
        build_classifier(ModelConfig())


def test_classify_config_checks_keys(classes_root, tmp_path):
    with pytest.raises(ConfigError, match="'model.head' must be 'classifier'"):
        load_train_config(
            resolve_mode("classify").config,
            None,
            ["model.head=deeplabv3", "model.in_channels=3", "data.preprocess.channels=3"],
        )
    with pytest.raises(ConfigError, match="run.early_stop_metric"):
        load_train_config(
            resolve_mode("classify").config,
            None,
            ["run.early_stop_metric=accuracy", "model.in_channels=3", "data.preprocess.channels=3"],
        )
