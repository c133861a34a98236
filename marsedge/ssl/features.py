"""Frozen-backbone image features: what clustering and linear evaluation both compute once.

    frame --THE preprocessing--> backbone (eval mode, no grad) --global average pool of `out`--> h

`load_backbone(checkpoint)` takes any marsedge checkpoint with `backbone.*` weights (a pretraining
or a segmentation one); without a checkpoint the backbone keeps its random initialisation (the
baseline linear evaluation compares against).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.edge.onnx_meta import ModelMetadata
from marsedge.models.build import ModelConfig, build_backbone
from marsedge.models.checkpoints import load_checkpoint, load_weights


class PooledBackbone(nn.Module):
    """A backbone whose forward returns the globally pooled final feature map (N x C)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone  # the attribute name makes checkpoint keys `backbone.*` line up

    @property
    def dim(self) -> int:
        return self.backbone.out_channels["out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)["out"].mean(dim=(2, 3))


def load_backbone(checkpoint: str | Path | None, model: ModelConfig | None = None,
                  seed: int = 0) -> tuple[PooledBackbone, PreprocessSpec | None]:
    """The pooled backbone of `checkpoint` (its model config decides the architecture) and its
    preprocessing spec; with no checkpoint, a seeded random initialisation of `model.backbone`."""
    if checkpoint is None:
        if model is None:
            raise ValueError("load_backbone needs a checkpoint or a model config")
        torch.manual_seed(seed)
        return PooledBackbone(build_backbone(model.backbone, model.output_stride, model.in_channels,
                                             model.stem_pool_padding)), None
    ckpt = load_checkpoint(checkpoint)
    meta = ModelMetadata.from_checkpoint(ckpt, source=checkpoint)
    cfg = ModelConfig.from_dict(meta.model_config)
    pooled = PooledBackbone(build_backbone(cfg.backbone, cfg.output_stride, cfg.in_channels,
                                           cfg.stem_pool_padding))
    load_weights(pooled, ckpt.state_dict, part="backbone", strict=True, source=str(checkpoint))
    return pooled, meta.preprocess


@torch.no_grad()
def extract_features(model: PooledBackbone, count: int, read: Callable[[int], np.ndarray],
                     spec: PreprocessSpec, batch_size: int = 32, device: str | torch.device = "cpu",
                     progress: str | None = None) -> np.ndarray:
    """float32 count x C features of frames `read(0) .. read(count - 1)` (uint8 frames)."""
    from tqdm import tqdm

    model = model.to(device).eval()
    out = np.zeros((count, model.dim), dtype=np.float32)
    starts = range(0, count, batch_size)
    for start in tqdm(starts, desc=progress, disable=True if progress is None else None, leave=False):
        stop = min(start + batch_size, count)
        batch = np.stack([preprocess(read(i), spec) for i in range(start, stop)])
        out[start:stop] = model(torch.from_numpy(batch).to(device)).float().cpu().numpy()
    return out


def frames_reader(paths: Sequence[Path]) -> Callable[[int], np.ndarray]:
    from marsedge.data.frames import read_frame

    return lambda i: read_frame(paths[i])
