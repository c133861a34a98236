"""The distillation set: the labelled training frames of train.py plus optional unlabelled frames.

    DistillFrames[i] -> {"image": float C,H,W, "label": long H,W (all 255 for unlabelled frames),
                         "index": i, "labelled": bool, "teacher_logits": float16 K,H,W (cache only)}

Unlabelled frames come from the same sources pretraining reads (marsedge.data.frame_sources: an
AI4Mars tree's `unlabelled` split, or any folder/glob of frames, synthetic or real) and are read as
semisup reads them (marsedge.train.supervised.UnlabelledFrames). They carry no label, so only the
distillation terms learn from them. Every frame is named by its image path, size and modification
time (`frame_key`), its key in the teacher-logit cache.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from marsedge.data.frame_sources import mix_sources
from marsedge.train.supervised import (
    LabelledThenUnlabelled,
    SegmentationFrames,
    UnlabelledFrames,
    held_out_files,
    training_set,
)

from .cache import LogitCache
from .config import DistillConfig

# the unlabelled frames' augmentation stream: seed + this, so frame i of each set is not augmented alike
UNLABELLED_STREAM = 7919


def frame_key(path: str | Path) -> str:
    """A frame's identity for the logit cache: its path, size and modification time, so a frame
    rewritten on disk (new synthetic data at the same path) gets new teacher logits, not stale ones."""
    stat = Path(path).stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


class DistillFrames(LabelledThenUnlabelled):
    """Labelled frames, then unlabelled ones; with a cache, each item also carries the teacher's logits."""

    def __init__(self, labelled: SegmentationFrames, unlabelled: UnlabelledFrames | None = None) -> None:
        super().__init__(labelled, unlabelled)
        self.cache: LogitCache | None = None  # set once the cache is filled (marsedge.distill.mode)

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


def build_distill_set(cfg: DistillConfig) -> DistillFrames:
    """The labelled training set train.py would use, plus the configured unlabelled frames."""
    spec, augment = cfg.data.preprocess, (cfg.data.augment if cfg.data.augment.enabled else None)
    labelled = SegmentationFrames(training_set(cfg.data, cfg.seed), spec, augment, cfg.seed)
    unlabelled = None
    if cfg.distill.unlabelled:
        # at most `unlabelled_frames`: a seeded draw by proportion (as pretraining) when there are more
        # never val's or a test split's frames: the teacher's logits on them would be their labels
        refs = mix_sources(cfg.distill.unlabelled, cfg.distill.unlabelled_frames, cfg.seed, at_most=True,
                           held_out=held_out_files(cfg.data, cfg.seed), key="distill.unlabelled")
        unlabelled = UnlabelledFrames(refs, spec, augment, cfg.seed + UNLABELLED_STREAM)
    return DistillFrames(labelled, unlabelled)
