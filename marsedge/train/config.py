"""The training config: one dataclass tree, loaded from YAML with dotted overrides.

    python train.py --config configs/teacher/r50_2x_sk1_aspp.yaml data.root=/data/ai4mars run.amp=bf16

`TrainConfig` holds what every mode shares (data, model, optimiser, loss, runs folder). A mode that
needs its own settings adds one nested section by subclassing, so the shared keys stay in one place
and an unknown key still fails before any work starts:

    @dataclass
    class PretrainSection:
        temperature: float = 0.1

    @dataclass
    class PretrainConfig(TrainConfig):
        pretrain: PretrainSection = field(default_factory=PretrainSection)

and registers `PretrainConfig` with its mode: `@register_mode("pretrain", PretrainConfig)` on the
mode's Job (marsedge.train.engine.job).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from marsedge.config import apply_overrides, from_dict, read_yaml
from marsedge.data.ai4mars import CARVED, TEST_SPLITS, VAL_FRACTION
from marsedge.data.augment import JointAugmentConfig
from marsedge.data.preprocess import PreprocessSpec
from marsedge.errors import ConfigError
from marsedge.models.build import ModelConfig

TENSORBOARD_MISSING = ("config key 'run.tensorboard' needs the tensorboard package "
                       "(pip install 'marsedge[tensorboard]'), or set run.tensorboard=false")


@dataclass
class DataConfig:
    """Where the frames come from and how the training set is composed."""

    root: str = "data/ai4mars"  # an AI4Mars-layout tree (real release or `marsedge data synth`)
    train_splits: list[str] = field(default_factory=lambda: ["train"])  # + "m2020-train": combined set
    # scored once, at the end, with the checkpoint selected on val (test_metrics.json); never tuned on
    test_splits: list[str] = field(default_factory=lambda: ["gold-min3"])
    # the `val` split: this fraction of each mission's training labels, whole spacecraft-clock groups
    # at a time (marsedge.data.sampling.validation_split); best.pt, early stopping and every other
    # choice are made on it. 0: no val, nothing is selected and best.pt is the final weights
    val_fraction: float = VAL_FRACTION
    val_seed: int | None = None  # None: the run's seed
    max_val: int | None = None  # keep at most this many val frames (smoke runs)
    four_class: bool = False  # True: rover/range pixels become ignore (the dataset paper's 4 classes)
    label_fraction: float = 1.0  # 0.01..1.0 of the labelled training frames, stratified by mission
    # a mixed-domain set drawn from the train splits: mixed_cap frames (1321 or 16064 in the paper),
    # round(mixed_cap * m2020_fraction) of them from M2020 and the rest from MSL
    m2020_fraction: float | None = None
    mixed_cap: int | None = None
    max_train: int | None = None  # keep at most this many training frames (smoke runs)
    max_test: int | None = None  # keep at most this many frames per test set
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    augment: JointAugmentConfig = field(default_factory=JointAugmentConfig)
    eval_batch_size: int = 8


@dataclass
class InitConfig:
    """Where the starting weights come from (nothing: from scratch)."""

    checkpoint: str | None = None
    # marsedge: our own checkpoint (pretraining or finetuning); torchvision: a ResNet state dict in
    # torchvision names; simclrv2: a SimCLRv2 checkpoint converted to torchvision-style names.
    format: Literal["marsedge", "torchvision", "simclrv2"] = "marsedge"
    backbone_only: bool = True  # load the backbone and leave the head freshly initialised


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (stepped once per optimiser step)."""

    name: Literal["sgd", "adamw", "lars"] = "sgd"
    lr: float = 0.01  # for the global batch (batch_size x accumulate x world size)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lars_trust: float = 0.001  # LARS trust coefficient (eta)
    no_decay_norm_bias: bool = True  # no weight decay (and no LARS scaling) on norm weights and biases
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    poly_power: float = 0.9
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0  # the schedule's floor as a fraction of lr
    clip_grad_norm: float | None = None


@dataclass
class LossConfig:
    """The segmentation loss; see `marsedge.train.losses` for each formula."""

    name: Literal[
        "ce", "inverse_frequency", "recall", "inverse_frequency_recall", "one_minus_composition"
    ] = "ce"
    recall_momentum: float = 0.9  # EMA of the per-class TP/FN counts behind the recall weights


@dataclass
class RunConfig:
    """Runs folder, evaluation, early stopping, precision and distribution."""

    out_dir: str = "runs"
    eval_every: int = 1  # epochs between evaluations (0: only at the end)
    early_stop_metric: str = "miou"  # a key of the val evaluation ("miou" or "val/miou"); never a test split
    early_stop_mode: Literal["max", "min"] = "max"
    early_stop_patience: int = 0  # evaluations without improvement before stopping; 0 = never
    # autocast dtype; auto: bf16 where the device multiplies it natively (marsedge.train.engine.precision)
    amp: Literal["none", "bf16", "fp16", "auto"] = "none"
    channels_last: bool = False
    sync_bn: bool = False  # SyncBatchNorm under DDP (GPU only)
    checkpoint_every: int = 0  # also write last.pt every N optimiser steps; 0 = at epoch ends only
    log_every: int = 10  # optimiser steps between metrics.jsonl train records
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    confusion_png: bool = True
    # a bar on a terminal, else a line every log_every steps and one per evaluation
    # (docs/watching-training.md)
    progress: bool = True
    tensorboard: bool = False  # event files in runs/<name>/tensorboard/ (the `tensorboard` extra)
    curves: bool = True  # runs/<name>/curves.png, redrawn at each evaluation
    ema: float | None = None  # decay of an EMA of the weights, evaluated beside them (e.g. 0.999); None: off
    keep_checkpoints: int = 0  # also keep epoch_XXX.pt of the last N epochs; 0: last.pt and best.pt only


@dataclass
class TrainConfig:
    """One training run: `runs/<name>/` holds everything it writes."""

    name: str = "run"
    mode: str = "finetune"  # a registered mode (marsedge.train.modes)
    seed: int = 0
    epochs: int = 50
    batch_size: int = 8  # per process and micro-step; global = batch_size x accumulate x world
    accumulate: int = 1  # micro-batches per optimiser step
    num_workers: int = 2
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.name

    def _validate_protocol(self) -> None:
        """The evaluation protocol: train on training labels, choose on val, score test splits once."""
        d = self.data
        if not 0.0 <= d.val_fraction < 1.0:
            raise ConfigError(f"config key 'data.val_fraction' must be in [0, 1), got {d.val_fraction}")
        for key, splits in (("data.train_splits", d.train_splits), ("data.test_splits", d.test_splits)):
            carved = [s for s in splits if s in CARVED]
            if carved:
                raise ConfigError(f"config key '{key}' names {carved[0]!r}: the val split is carved from "
                                  "data.train_splits by data.val_fraction, not named")
        leaked = [s for s in d.train_splits if s in TEST_SPLITS]
        if leaked:
            raise ConfigError(f"config key 'data.train_splits' names the test split {leaked[0]!r}: "
                              "test splits are scored once, never trained on")
        metric = self.run.early_stop_metric
        if "/" in metric and metric.split("/", 1)[0] != "val":
            raise ConfigError(f"config key 'run.early_stop_metric': {metric!r} selects on split "
                              f"{metric.split('/', 1)[0]!r}; best.pt and early stopping are chosen on 'val' "
                              "only (e.g. 'miou' or 'val/miou'), test splits are scored once at the end")
        if d.val_fraction == 0 and self.run.early_stop_patience > 0:
            raise ConfigError("config key 'run.early_stop_patience' needs a val split to watch "
                              "(data.val_fraction > 0)")

    def validate(self) -> None:
        """Checks across keys that the types alone cannot express; raises ConfigError naming the key."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "accumulate": self.accumulate,
                    "data.eval_batch_size": self.data.eval_batch_size}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"config key '{key}' must be >= 1, got {value}")
        if self.num_workers < 0:
            raise ConfigError(f"config key 'num_workers' must be >= 0, got {self.num_workers}")
        if not 0.0 < self.data.label_fraction <= 1.0:
            raise ConfigError(
                f"config key 'data.label_fraction' must be in (0, 1], got {self.data.label_fraction}")
        if self.data.m2020_fraction is not None and not 0.0 <= self.data.m2020_fraction <= 1.0:
            raise ConfigError(
                f"config key 'data.m2020_fraction' must be in [0, 1], got {self.data.m2020_fraction}")
        if (self.data.m2020_fraction is None) != (self.data.mixed_cap is None):
            raise ConfigError("config keys 'data.m2020_fraction' and 'data.mixed_cap' go together "
                              "(a mixed-domain set needs both)")
        if not self.data.train_splits:
            raise ConfigError("config key 'data.train_splits' must name at least one split")
        if not math.isfinite(self.optim.lr) or self.optim.lr <= 0:
            raise ConfigError(f"config key 'optim.lr' must be a positive finite number, got {self.optim.lr}")
        if self.init.format == "simclrv2" and self.model.stem_pool_padding != "tf_same":
            raise ConfigError("config key 'model.stem_pool_padding' must be tf_same with init.format "
                              "simclrv2 (TF-trained weights give the TF network's features only with "
                              "its stem pool)")
        at_least = {"run.log_every": (self.run.log_every, 1), "run.max_steps": (self.run.max_steps, 0),
                    "run.eval_every": (self.run.eval_every, 0),
                    "run.checkpoint_every": (self.run.checkpoint_every, 0),
                    "run.early_stop_patience": (self.run.early_stop_patience, 0),
                    "run.keep_checkpoints": (self.run.keep_checkpoints, 0)}
        for key, (value, least) in at_least.items():
            if value is not None and value < least:
                raise ConfigError(f"config key '{key}' must be >= {least}, got {value}")
        if self.run.ema is not None and not 0.0 < self.run.ema < 1.0:
            raise ConfigError(f"config key 'run.ema' must be in (0, 1) (a decay such as 0.999), "
                              f"got {self.run.ema}")
        if self.run.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(TENSORBOARD_MISSING)
        self._validate_protocol()
        if not self.data.test_splits:
            raise ConfigError("config key 'data.test_splits' must name at least one test split")
        if self.model.in_channels != self.data.preprocess.channels:
            raise ConfigError(
                f"config key 'model.in_channels' ({self.model.in_channels}) must equal "
                f"'data.preprocess.channels' ({self.data.preprocess.channels})"
            )
        if "/" in self.name or self.name in ("", ".", ".."):
            raise ConfigError(f"config key 'name' must be one folder name, got {self.name!r}")


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        both_maps = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both_maps else value
    return out


def read_config_file(path: str | Path, _depth: int = 0) -> dict:
    """A YAML config with its `base:` chain merged in: an experiment file names its base (a path
    relative to itself) and sets only what differs, e.g. `base: r50_2x_sk1_aspp_seed.yaml` plus
    `data: {label_fraction: 0.01}`."""
    if _depth > 8:
        raise ConfigError(f"{path}: config 'base' chain deeper than 8 files (a cycle?)")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: config key 'base' must be a file path, got {base!r}")
    return _merge(read_config_file(Path(path).parent / base, _depth + 1), data)


def read_mode(path: str | Path | None, overrides: list[str]) -> str:
    """The `mode` key of a config file (or its override), read before the full config is typed."""
    mode = read_config_file(path).get("mode", "finetune") if path is not None else "finetune"
    for item in overrides:
        if item.split("=", 1)[0].strip() == "mode":
            mode = item.split("=", 1)[1].strip()
    return str(mode)


def load_train_config(cls: type[TrainConfig], path: str | Path | None, overrides: list[str]) -> TrainConfig:
    """Load and validate a config of class `cls` (TrainConfig or a mode's subclass)."""
    data = read_config_file(path) if path is not None else {}
    cfg = from_dict(cls, apply_overrides(data, overrides))
    cfg.validate()
    return cfg
