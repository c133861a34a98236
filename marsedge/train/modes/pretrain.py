"""Mode `pretrain`: SimCLR, cluster-aware SimCLR or DenseCL-style dense SimCLR on unlabelled frames.

    frame --two random views--> backbone f --global average pool--> h --projection MLP g--> z
    loss: NT-Xent over the 2N views of the global batch (cluster-aware when frames carry clusters)

With `pretrain.objective: densecl` a dense projection head also maps f, location by location, to
q (D x h x w), and the loss becomes (1 - lambda) NT-Xent(z) + lambda dense(q) with lambda =
`pretrain.dense_weight` (marsedge.ssl.dense: each location's positive is the other view's location
with the most similar backbone feature, its negatives the other frames' pooled q).

The training loop (marsedge.train.engine.loop) does everything else: DDP, LARS/AdamW, cosine schedule with
warmup, accumulation (large effective batches: note that accumulation multiplies the steps per
update, not the negatives per loss), checkpoints, resume. The checkpoint's state dict holds
`backbone.*` (what finetuning loads with `init.checkpoint`, `init.backbone_only: true`) and
`projection.*` (and `dense_projection.*` under densecl).

With `pretrain.probe.frames: N` (N > 0) the loop scores the features on val every `run.eval_every`
epochs (and at the end) with a dense nearest-centroid or kNN probe fitted on N labelled train
frames (marsedge.ssl.probe): the `eval` records of metrics.jsonl, the progress lines and the curves
show whether the features improve. best.pt stays the final weights unless `pretrain.probe.select`.

Cluster-aware pretraining reads a clusters file written by `marsedge cluster` (k-means on a
previous model's features): `pretrain.clusters: runs/x/clusters_k8.json`, and checks that its K
equals `pretrain.num_clusters`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from marsedge.data.ai4mars import AI4MarsDataset
from marsedge.data.frame_sources import FrameRef, SourceConfig, mix_sources, source_counts
from marsedge.data.frames import read_frame
from marsedge.data.views import ContrastiveViewConfig, contrastive_view, view_rng
from marsedge.errors import ConfigError, DataError
from marsedge.models.build import build_backbone
from marsedge.models.heads import DenseProjection, ProjectionMLP
from marsedge.ssl.cluster import load_clusters
from marsedge.ssl.contrastive import ClusterAwareNTXentLoss, NTXentLoss
from marsedge.ssl.dense import DenseContrastiveLoss
from marsedge.ssl.probe import ProbeEvaluator
from marsedge.train.config import TrainConfig
from marsedge.train.engine.job import FitPlan, Job, register_mode
from marsedge.train.supervised import SegmentationFrames, held_out_files, training_set, validation_set


@dataclass
class ProbeSection:
    frames: int = 0  # labelled train frames the probe is fitted on; 0: no probe
    method: Literal["centroid", "knn"] = "centroid"
    k: int = 20  # neighbours that vote (knn)
    bank: int = 20000  # at most this many train feature pixels, a seeded sample (knn)
    # the probe's frame size (None: data.preprocess's): the backbone is fully convolutional, so views
    # pretrained at 64 px can be probed at the size finetuning will use, on more cells per frame
    height: int | None = None
    width: int | None = None
    select: bool = False  # best.pt and early stopping on the probe's run.early_stop_metric


@dataclass
class PretrainSection:
    # simclr: NT-Xent on pooled features; densecl: adds the dense loss of marsedge.ssl.dense
    objective: Literal["simclr", "densecl"] = "simclr"
    dense_weight: float = 0.5  # densecl's lambda: (1 - lambda) NT-Xent + lambda dense (DenseCL's 0.5)
    temperature: float = 0.5  # the homogeneous-Mars paper's table A; densecl's two terms share it
    projection_dim: int = 128
    projection_layers: int = 3
    sources: list[SourceConfig] = field(default_factory=list)  # empty: data.root's unlabelled split
    frames_per_epoch: int | None = None  # None: every frame of every source once per epoch
    clusters: str | None = None  # a `marsedge cluster` file: turns on the cluster-aware loss
    num_clusters: int | None = None  # K; must match the clusters file when one is given
    # same-cluster views of other frames: eliminate = out of the denominator (eq. 2), attract = positives
    cluster_mode: Literal["eliminate", "attract"] = "eliminate"
    views: ContrastiveViewConfig = field(default_factory=ContrastiveViewConfig)
    probe: ProbeSection = field(default_factory=ProbeSection)


@dataclass
class PretrainConfig(TrainConfig):
    pretrain: PretrainSection = field(default_factory=PretrainSection)

    def validate(self) -> None:
        super().validate()
        if self.pretrain.num_clusters is not None and self.pretrain.clusters is None:
            raise ConfigError("config key 'pretrain.num_clusters' is set but 'pretrain.clusters' names no "
                              "file (run `marsedge cluster --k K` first)")
        if not 0.0 <= self.pretrain.dense_weight <= 1.0:
            raise ConfigError(f"config key 'pretrain.dense_weight' must be in [0, 1], got "
                              f"{self.pretrain.dense_weight}")
        if self.pretrain.objective == "densecl" and self.pretrain.clusters is not None:
            raise ConfigError("config key 'pretrain.clusters': the cluster-aware loss is SimCLR's; "
                              "'pretrain.objective: densecl' takes no clusters file")
        probe = self.pretrain.probe
        if probe.frames < 0 or probe.k < 1 or probe.bank < 1:
            raise ConfigError("config keys 'pretrain.probe.frames/k/bank' must be >= 0, >= 1, >= 1, got "
                              f"{probe.frames}, {probe.k}, {probe.bank}")
        if min(probe.height or 1, probe.width or 1) < 1:
            raise ConfigError(f"config keys 'pretrain.probe.height/width' must be >= 1 (or null), got "
                              f"{probe.height}, {probe.width}")
        if probe.frames and self.data.val_fraction == 0:
            raise ConfigError("config key 'pretrain.probe.frames': the probe is scored on val, and "
                              "'data.val_fraction' is 0")
        if self.run.early_stop_patience and not (probe.frames and probe.select):
            raise ConfigError("config key 'run.early_stop_patience' needs a probe that selects "
                              "('pretrain.probe.frames' > 0, 'pretrain.probe.select: true')")


class SimCLRModel(nn.Module):
    """Backbone + global average pooling + projection MLP. `forward(x) -> z` (N x projection_dim);
    `features(x) -> h` (N x C, the representation downstream tasks use)."""

    def __init__(self, backbone: nn.Module, projection_dim: int = 128, projection_layers: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = ProjectionMLP(backbone.out_channels["out"], projection_dim, projection_layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)["out"].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(x))


class DenseCLModel(SimCLRModel):
    """SimCLRModel (same `backbone.*` and `projection.*` keys, so finetuning loads the backbone as from
    SimCLR) plus DenseCL's dense projection of the backbone's `out` map.

    `forward(x) -> (z, q, f)`: z the global projection (N x projection_dim), q the dense projection
    (N x projection_dim x h x w) and f the backbone map (N x C x h x w) the correspondence is found on.
    """

    def __init__(self, backbone: nn.Module, projection_dim: int = 128, projection_layers: int = 3) -> None:
        super().__init__(backbone, projection_dim, projection_layers)
        self.dense_projection = DenseProjection(backbone.out_channels["out"], projection_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        f = self.backbone(x)["out"]  # one backbone pass feeds both heads
        return self.projection(f.mean(dim=(2, 3))), self.dense_projection(f), f


def build_simclr_model(cfg: PretrainConfig) -> SimCLRModel:
    """The model `pretrain.objective` trains: SimCLRModel, or DenseCLModel under densecl."""
    backbone = build_backbone(cfg.model.backbone, cfg.model.output_stride, cfg.model.in_channels,
                              cfg.model.stem_pool_padding)
    kind = DenseCLModel if cfg.pretrain.objective == "densecl" else SimCLRModel
    return kind(backbone, cfg.pretrain.projection_dim, cfg.pretrain.projection_layers)


class ContrastiveFrames(Dataset):
    """Frames -> {"view1", "view2": float C x H x W, "index": long, "cluster": long (if clusters)}.

    View randomness comes from (seed, epoch, index, view), so it does not depend on workers, ranks
    or resume points; the loop calls `set_epoch` at each epoch start.
    """

    def __init__(self, frames: list[FrameRef], spec, views: ContrastiveViewConfig, seed: int = 0,
                 clusters: dict[str, int] | None = None) -> None:
        self.frames, self.spec, self.views, self.seed = frames, spec, views, seed
        self.epoch = 0
        self.cluster_ids = None
        if clusters is not None:
            missing = [f.name for f in frames if f.name not in clusters]
            if missing:
                raise DataError(f"clusters file has no cluster for {len(missing)} frame(s), e.g. "
                                f"{missing[0]!r}: recompute it with `marsedge cluster` on the same sources")
            self.cluster_ids = [clusters[f.name] for f in frames]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        image = read_frame(self.frames[index].path)
        views = [contrastive_view(image, self.spec, self.views, view_rng(self.seed, self.epoch, index, v))
                 for v in (0, 1)]
        item = {"view1": torch.from_numpy(views[0]), "view2": torch.from_numpy(views[1]),
                "index": torch.tensor(index)}
        if self.cluster_ids is not None:
            item["cluster"] = torch.tensor(self.cluster_ids[index])
        return item


class SimCLRObjective:
    """`objective(model, batch, state) -> (loss, logs)` for the training loop."""

    def __init__(self, temperature: float, cluster_aware: bool, cluster_mode: str = "eliminate") -> None:
        self.cluster_aware = cluster_aware
        self.loss = (ClusterAwareNTXentLoss(temperature, cluster_mode=cluster_mode) if cluster_aware
                     else NTXentLoss(temperature))

    def __call__(self, model: nn.Module, batch: dict, state) -> tuple[torch.Tensor, dict]:
        n = batch["view1"].shape[0]
        z = model(torch.cat([batch["view1"], batch["view2"]]))  # one forward: BN sees both views
        z_a, z_b = z[:n].float(), z[n:].float()
        if self.cluster_aware:
            loss = self.loss(z_a, z_b, batch["cluster"])
        else:
            loss = self.loss(z_a, z_b)
        with torch.no_grad():  # positive-pair agreement: rises as the views align
            cos = nn.functional.cosine_similarity(z_a, z_b).mean()
        return loss, {"pos_cos": float(cos)}


class DenseCLObjective:
    """(1 - dense_weight) NT-Xent on the global projections + dense_weight DenseContrastiveLoss on the
    dense ones, for a DenseCLModel; logs `pos_cos` as SimCLRObjective and `dense_pos_cos`, the mean
    cosine of each location's projection with its matched location in the other view."""

    def __init__(self, temperature: float, dense_weight: float) -> None:
        self.dense_weight = dense_weight
        self.global_loss = NTXentLoss(temperature)
        self.dense_loss = DenseContrastiveLoss(temperature)

    def __call__(self, model: nn.Module, batch: dict, state) -> tuple[torch.Tensor, dict]:
        n = batch["view1"].shape[0]
        z, q, f = model(torch.cat([batch["view1"], batch["view2"]]))  # one forward: BN sees both views
        z_a, z_b = z[:n].float(), z[n:].float()
        global_loss = self.global_loss(z_a, z_b)
        dense_loss, dense_cos = self.dense_loss.terms(q[:n], q[n:], f[:n], f[n:])
        loss = (1 - self.dense_weight) * global_loss + self.dense_weight * dense_loss
        with torch.no_grad():
            cos = nn.functional.cosine_similarity(z_a, z_b).mean()
        return loss, {"pos_cos": float(cos), "dense_pos_cos": float(dense_cos),
                      "global_loss": float(global_loss.detach()), "dense_loss": float(dense_loss.detach())}


def pretrain_frames(cfg: PretrainConfig) -> list[FrameRef]:
    """The configured frame mix (default: the unlabelled split of data.root), less the frames of
    data's val and test splits (a source reaching a test frame is an error)."""
    sources = cfg.pretrain.sources or [SourceConfig(root=cfg.data.root)]
    frames = mix_sources(sources, cfg.pretrain.frames_per_epoch, cfg.seed,
                         held_out=held_out_files(cfg.data, cfg.seed))
    if cfg.data.max_train is not None and cfg.data.max_train < len(frames):  # a seeded subset (smoke runs)
        keep = np.random.default_rng(cfg.seed).choice(len(frames), cfg.data.max_train, replace=False)
        frames = [frames[i] for i in sorted(keep)]
    return frames


def probe_curve(run_dir: str | Path, metric: str) -> dict | None:
    """The probe's first, last and best `metric` ({"epoch", "value"} each) from the run's metrics.jsonl
    (a resumed run's file reads as one run); None before the first probe."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    points = [{"epoch": r["epoch"], "value": r[metric]} for r in map(json.loads, filter(str.strip, lines))
              if r.get("kind") == "eval" and isinstance(r.get(metric), (int, float))]
    if not points:
        return None
    return {"metric": metric, "first": points[0], "last": points[-1],
            "best": max(points, key=lambda p: p["value"])}


def build_probe(cfg: PretrainConfig) -> ProbeEvaluator:
    """The feature probe: `pretrain.probe.frames` seeded labelled train frames (the train splits
    minus val, as finetuning composes them) and the val split finetuning selects on."""
    probe = cfg.pretrain.probe
    try:
        train = training_set(cfg.data, cfg.seed)
    except DataError as exc:
        raise ConfigError(f"config key 'pretrain.probe.frames': the probe needs labelled train frames "
                          f"in data.root ({exc})") from None
    val = validation_set(cfg.data, cfg.seed)
    if val is None:
        raise ConfigError(f"config key 'pretrain.probe.frames': {cfg.data.root} gives no val frames "
                          f"(data.val_fraction {cfg.data.val_fraction}: a single clock group per mission?)")
    if probe.frames < len(train):
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(train), probe.frames, replace=False))
        train = AI4MarsDataset(train.root, train.split, four_class=train.four_class,
                               items=[train.items[i] for i in keep])
    spec = dataclasses.replace(cfg.data.preprocess, height=probe.height or cfg.data.preprocess.height,
                               width=probe.width or cfg.data.preprocess.width)
    return ProbeEvaluator(SegmentationFrames(train, spec), SegmentationFrames(val, spec),
                          cfg.model.num_classes, probe.method, probe.k, probe.bank, cfg.seed,
                          cfg.data.eval_batch_size, selects=probe.select)


@register_mode("pretrain", PretrainConfig)
class Pretrain(Job):
    cfg: PretrainConfig

    def prepare(self) -> None:
        cfg = self.cfg
        self.frames = pretrain_frames(cfg)
        self.clusters = None
        if cfg.pretrain.clusters is not None:
            self.clusters = load_clusters(cfg.pretrain.clusters, cfg.pretrain.num_clusters)
        self.counts = source_counts(self.frames, max(1, len(cfg.pretrain.sources)))
        self.dataset = ContrastiveFrames(self.frames, cfg.data.preprocess, cfg.pretrain.views, cfg.seed,
                                         self.clusters)
        self.probe = build_probe(cfg) if cfg.pretrain.probe.frames else None

    def build(self) -> FitPlan:
        cfg = self.cfg
        if cfg.pretrain.objective == "densecl":
            objective = DenseCLObjective(cfg.pretrain.temperature, cfg.pretrain.dense_weight)
        else:
            objective = SimCLRObjective(cfg.pretrain.temperature, cluster_aware=self.clusters is not None,
                                        cluster_mode=cfg.pretrain.cluster_mode)
        return FitPlan(build_simclr_model(cfg), objective, self.dataset, evaluator=self.probe)

    def banner(self) -> str:
        cfg, ctx, clusters = self.cfg, self.ctx, self.clusters
        kind = (f"cluster-aware SimCLR (K={len(set(clusters.values()))}, {cfg.pretrain.cluster_mode})"
                if clusters else "SimCLR")
        if cfg.pretrain.objective == "densecl":
            kind = f"DenseCL-style SimCLR (dense weight {cfg.pretrain.dense_weight})"
        probe = ""
        if self.probe is not None:
            every = f"every {cfg.run.eval_every} epoch(s)" if cfg.run.eval_every else "at the end"
            probe = (f"; {cfg.pretrain.probe.method} probe on {len(self.probe.train.dataset)} train / "
                     f"{len(self.probe.val.dataset)} val frames {every}")
        return (f"{kind}, {cfg.model.backbone}; {len(self.frames)} frames per epoch (per source "
                f"{self.counts}){probe}, {ctx.world_size} process(es) on {ctx.device}")

    def finish(self, summary: dict) -> dict:
        summary.update(frames=len(self.frames), source_counts=self.counts)
        if self.probe is not None and self.ctx.is_main:
            curve = probe_curve(summary["run_dir"], self.cfg.run.early_stop_metric)
            if curve is not None:
                summary["probe"] = {"method": self.cfg.pretrain.probe.method, **curve}
        return summary
