"""TensorBoard event files for a run (`run.tensorboard: true`; `pip install marsedge[tensorboard]`).

runs/<name>/tensorboard/ gets, against optimiser steps:
    train/<term>, train/lr, train/images_per_s, train/data_wait_share    every run.log_every steps
    val/<metric>, val/<metric>/<class>                                   every evaluation
    val_ema/...                                                          the moving average (run.ema)
    val/confusion                                                        row-normalised confusion matrix
    val/overlay_<i>                                                      image | label | prediction

of the weights best.pt would take at that evaluation (the better of the two with run.ema).
`tensorboard --logdir runs/` shows every run. metrics.jsonl and log.csv stay the record: these files
are a view of it. A resumed run drops the events the interrupted one wrote after its checkpoint
(TensorBoard's purge_step).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from marsedge.errors import ConfigError
from marsedge.terrain import colorize
from marsedge.train.config import TENSORBOARD_MISSING

OVERLAYS = 3  # val frames drawn per evaluation


def check_available() -> None:
    """Refuse run.tensorboard before training when the package is missing (config files are checked
    for it when they load: TrainConfig.validate)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(TENSORBOARD_MISSING)


def _scalar(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _val_scalars(record: dict) -> dict[str, float]:
    """TensorBoard tags for an evaluation record: unprefixed scalars and per-class dicts of val."""
    out: dict[str, float] = {}
    for key, value in record.items():
        group, name = ("val_ema", key[4:]) if key.startswith("ema/") else ("val", key)
        split, _, metric = name.rpartition("/")
        if not split and _scalar(value) and name != "pixels":
            out[f"{group}/{name}"] = float(value)
        elif split == "val" and isinstance(value, dict):
            out.update({f"{group}/{metric}/{cls}": float(v) for cls, v in value.items() if _scalar(v)})
    return out


def confusion_image(matrix: np.ndarray, names: list[str]) -> np.ndarray:
    """The row-normalised confusion matrix drawn as an HxWx3 uint8 image (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    fig = Figure(figsize=(5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i, j in np.ndindex(norm.shape):
        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="truth")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


@torch.no_grad()
def overlays(evaluator, model: nn.Module, device: torch.device, classes: list[dict] | None,
             n: int = OVERLAYS) -> list[np.ndarray]:
    """image | label | prediction panels (HxWx3 uint8) of the first `n` val frames, for evaluators
    that read segmentation frames (`loaders["val"]`, items with an image and an HxW label)."""
    loader = getattr(evaluator, "loaders", {}).get("val")
    if loader is None:
        return []
    panels = []
    was_training = model.training
    model.eval()
    for i in range(min(n, len(loader.dataset))):
        item = loader.dataset[i]
        image, label = item.get("image"), item.get("label")
        if not isinstance(image, torch.Tensor) or not isinstance(label, torch.Tensor) or label.ndim != 2:
            break
        pred = model(image[None].to(device)).argmax(dim=1)[0].cpu().numpy()
        picture = image.float().clamp(0, 1).mul(255).byte().numpy()
        picture = np.repeat(picture, 3, axis=0) if picture.shape[0] == 1 else picture[:3]
        panels.append(np.concatenate([picture.transpose(1, 2, 0),
                                      colorize(label.numpy().astype(np.uint8), classes),
                                      colorize(pred.astype(np.uint8), classes)], axis=1))
    model.train(was_training)
    return panels


class TensorBoardLog:
    """One SummaryWriter on rank 0."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def train(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def evaluation(self, step: int, record: dict, weights: str, panels: list[np.ndarray]) -> None:
        for tag, value in _val_scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        prefix = "ema/" if weights == "ema" else ""
        matrix, names = record.get(f"{prefix}val/confusion"), record.get(f"{prefix}val/iou")
        if matrix is not None and isinstance(names, dict):
            self.writer.add_image("val/confusion", confusion_image(np.asarray(matrix), list(names)), step,
                                  dataformats="HWC")
        for i, panel in enumerate(panels):
            self.writer.add_image(f"val/overlay_{i}", panel, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
