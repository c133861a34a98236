"""Unlabelled frame sources for pretraining, clustering, semisup and distillation, mixed at chosen
proportions.

A source is an AI4Mars tree (its `unlabelled` split by default, optionally one mission) or any
folder/glob of frames. Mixed-domain pretraining (the homogeneous-Mars paper, section 4.3)
concatenates sources at the configured proportions and lets the loader shuffle them:

    pretrain:
      sources:
        - {root: data/ai4mars, split: unlabelled, mission: msl, proportion: 0.5}
        - {root: data/ai4mars, split: unlabelled, mission: m2020, proportion: 0.3}
        - {root: /data/imagenet_subset, kind: folder, proportion: 0.2}
      frames_per_epoch: 20000      # total; each source contributes proportion x total

A source smaller than its share is sampled with replacement; a larger one without. The draw is
seeded, so the same config gives the same frame list (and `marsedge cluster` sees the same frames).

A run's held-out frames (`held_out`: its val frames, which select the checkpoint, and its test
frames, scored once) are never trained on, even without their labels: a source that reaches a val
frame loses it, one that reaches a test frame is a config error. Frames are matched by file identity
(device, inode), so a hard or symbolic link to a held-out image is found too. torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from marsedge.data.ai4mars import list_items
from marsedge.data.inputs import frame_files
from marsedge.errors import ConfigError, DataError


@dataclass
class SourceConfig:
    root: str = "data/ai4mars"
    kind: Literal["ai4mars", "folder"] = "ai4mars"
    split: str = "unlabelled"  # ai4mars only: any split; labels are not used
    mission: str | None = None  # ai4mars only: keep one mission ("msl", "m2020", "mer")
    proportion: float = 1.0  # share of frames_per_epoch (normalised over the sources)


@dataclass(frozen=True)
class FrameRef:
    """One frame to read: its path and a name unique across sources (the cluster-file key)."""

    path: Path
    name: str
    source: int


def split_frames(root: str | Path, split: str, mission: str | None = None, index: int = 0) -> list[FrameRef]:
    """The frames of one split of an AI4Mars tree (optionally one mission), in the reader's order
    (`marsedge.data.ai4mars.list_items`: per mission, by name)."""
    items = list_items(root, split)
    if mission is not None:
        items = [it for it in items if it.mission == mission]
    return [FrameRef(Path(it.image), it.name, index) for it in items]


def list_source(source: SourceConfig, index: int) -> list[FrameRef]:
    """Every frame of one source, sorted by name."""
    if source.kind == "ai4mars":
        refs = split_frames(source.root, source.split, source.mission, index)
    else:
        root = Path(source.root)
        refs = [FrameRef(p, p.relative_to(root).as_posix() if root.is_dir() else p.name, index)
                for p in frame_files(source.root)]
    if not refs:
        detail = f" (mission {source.mission})" if source.mission else ""
        raise DataError(f"frame source {source.root}{detail}: no frames found")
    return sorted(refs, key=lambda r: r.name)


FileId = tuple[int, int]  # (st_dev, st_ino): one file, whatever path or link reaches it


def file_id(path: str | Path) -> FileId:
    stat = os.stat(path)  # follows symbolic links; a hard link shares the inode
    return stat.st_dev, stat.st_ino


def without_held_out(refs: list[FrameRef], held_out: Mapping[FileId, str], key: str) -> list[FrameRef]:
    """`refs` minus the val frames of `held_out` (file id -> split); a test frame is a ConfigError
    naming `key`: a run never trains on the frames it is scored on."""
    kept = []
    for ref in refs:
        split = held_out.get(file_id(ref.path))
        if split is None:
            kept.append(ref)
        elif split != "val":
            raise ConfigError(f"config key '{key}': {ref.path} is a frame of the test split {split!r}; a run "
                              "never trains on the frames it is scored on, with or without their labels")
    if not kept:
        raise ConfigError(f"config key '{key}': every frame is a val frame (val selects the checkpoint, "
                          "so it is left out of training)")
    return kept


def mix_sources(sources: list[SourceConfig], frames_per_epoch: int | None, seed: int,
                at_most: bool = False, held_out: Mapping[FileId, str] | None = None,
                key: str = "pretrain.sources") -> list[FrameRef]:
    """The concatenated frame list: every frame of every source when frames_per_epoch is None (and
    proportions are ignored), else round(share x frames_per_epoch) frames of each source. With
    `at_most`, frames_per_epoch is a cap: when the sources hold no more than that, every frame.
    `held_out` frames are left out first (`without_held_out`); `key` names the sources in errors."""
    if not sources:
        raise ConfigError(f"config key '{key}' must list at least one source")
    shares = np.array([s.proportion for s in sources], dtype=float)
    if (shares < 0).any() or shares.sum() <= 0:
        raise ConfigError(f"config key '{key}[*].proportion' must be >= 0 with a positive sum")
    lists = [list_source(s, i) for i, s in enumerate(sources)]
    if held_out:
        lists = [without_held_out(refs, held_out, f"{key}[{i}]") for i, refs in enumerate(lists)]
    if frames_per_epoch is None or (at_most and frames_per_epoch >= sum(map(len, lists))):
        return [ref for refs in lists for ref in refs]
    rng = np.random.default_rng(seed)
    mixed: list[FrameRef] = []
    for refs, share in zip(lists, shares / shares.sum(), strict=True):
        want = int(round(share * frames_per_epoch))
        picks = rng.choice(len(refs), size=want, replace=want > len(refs))
        mixed += [refs[i] for i in sorted(picks)]
    return mixed


def source_counts(frames: list[FrameRef], num_sources: int) -> list[int]:
    """How many frames of the mix come from each source (for the run log)."""
    return np.bincount([f.source for f in frames], minlength=num_sources).tolist()
