"""The distillation set: the labelled training frames of train.py plus optional unlabelled frames.

    DistillFrames[i] -> {"image": float C,H,W, "label": long H,W (all 255 for unlabelled frames),
                         "index": i, "labelled": bool, "teacher_logits": float16 K,H,W (cache only)}

Unlabelled frames come from the same sources pretraining reads (marsedge.train.frame_sources: an
AI4Mars tree's `unlabelled` split, or any folder/glob of frames, synthetic or real). They carry no
label, so only the distillation terms learn from them. Every frame is named by its image path, size
and modification time (`frame_key`), its key in the teacher-logit cache.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from marsedge.data.augment import JointAugmentConfig, geometric, photometric, sample_rng
from marsedge.data.frames import read_frame
from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.terrain import IGNORE_INDEX
from marsedge.train.datasets import LabelledThenUnlabelled, SegmentationFrames
from marsedge.train.frame_sources import FrameRef

from .cache import LogitCache


def frame_key(path: str | Path) -> str:
    """A frame's identity for the logit cache: its path, size and modification time, so a frame
    rewritten on disk (new synthetic data at the same path) gets new teacher logits, not stale ones."""
    stat = Path(path).stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


class UnlabelledFrames(Dataset):
    """Frames without labels as training tensors; their label is all ignore (255)."""

    def __init__(self, frames: list[FrameRef], spec: PreprocessSpec,
                 augment: JointAugmentConfig | None = None, seed: int = 0) -> None:
        self.frames = frames
        self.spec = spec
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        image = read_frame(self.frames[index].path)
        # a different seed stream from the labelled frames, so frame i of each set is not augmented alike
        rng = sample_rng(self.seed + 7919, self.epoch, index) if self.augment is not None else None
        if rng is not None:
            image, _ = geometric(image, None, self.augment, rng)
        x = preprocess(image, self.spec)
        if rng is not None:
            x = photometric(x, self.augment, rng)
        label = torch.full((self.spec.height, self.spec.width), IGNORE_INDEX, dtype=torch.int64)
        return {"image": torch.from_numpy(np.ascontiguousarray(x)), "label": label, "index": index}


class DistillFrames(LabelledThenUnlabelled):
    """Labelled frames, then unlabelled ones; with a cache, each item also carries the teacher's logits."""

    def __init__(self, labelled: SegmentationFrames, unlabelled: UnlabelledFrames | None = None) -> None:
        super().__init__(labelled, unlabelled)
        self.cache: LogitCache | None = None  # set once the cache is filled (marsedge.distill.loop)

    @functools.cached_property
    def names(self) -> list[str]:
        """Cache keys of every frame, in dataset order (a stat per frame: only runs with a cache ask)."""
        paths = [item.image for item in self.labelled.source.items]
        if self.unlabelled is not None:
            paths += [ref.path for ref in self.unlabelled.frames]
        return [frame_key(p) for p in paths]

    def frame(self, index: int) -> dict:
        """Item `index` without cached logits (what the teacher sees when filling the cache)."""
        return super().__getitem__(index)

    def __getitem__(self, index: int) -> dict:
        item = self.frame(index)
        if self.cache is not None:
            item["teacher_logits"] = torch.from_numpy(self.cache.get(self.names[index]))
        return item
