"""Balanced batches: every optimiser step sees labelled and unlabelled frames in a fixed ratio.

Drawing batches from the union of a few labelled frames and many unlabelled ones starves the
ground-truth term: with 72 labelled and 1,046 unlabelled frames, 93 % of the samples carry no label
and each labelled frame comes round once per ~15 batches. Semi-supervised segmentation (UniMatch)
instead draws a labelled and an unlabelled batch of fixed sizes every step, the labelled set
oversampled. `BalancedFrames` does that inside one dataset, so the shared training loop and its
sampler need nothing new:

    item i of epoch e = labelled frame i  +  `ratio` unlabelled frames, stacked as a group
    len(BalancedFrames) = number of labelled frames, so one epoch = one pass over the labels

The unlabelled frames are taken in a seeded random order that runs on across epochs (position
g = (e * n_labelled + i) * ratio + j of an endless stream of permutations), so every unlabelled
frame is seen once before any is seen twice, each pass over them with fresh augmentation, and item
(e, i) is the same in a resumed run, under DDP and with any number of loader workers.

A batch of B items collates to tensors of shape B, 1 + ratio, ...; `flatten_groups` makes it a batch
of B * (1 + ratio) frames (what the objective trains on).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .data import DistillFrames

# the unlabelled draw's random stream: seed + this, apart from the augmentation streams
ORDER_STREAM = 104729


class BalancedFrames(Dataset):
    """One labelled frame and `ratio` unlabelled frames per item; an epoch is a pass over the labels."""

    def __init__(self, frames: DistillFrames, ratio: int, seed: int) -> None:
        if ratio < 0:
            raise ValueError(f"ratio must be >= 0, got {ratio}")
        self.frames = frames
        self.n_labelled = frames.n_labelled
        self.n_unlabelled = len(frames.unlabelled) if frames.unlabelled is not None else 0
        self.ratio = ratio if self.n_unlabelled else 0
        self.seed = seed
        self.epoch = 0
        self._last_order: tuple[int, np.ndarray] = (-1, np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return self.n_labelled

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.frames.labelled.set_epoch(epoch)

    def _order(self, cycle: int) -> np.ndarray:
        """The unlabelled frames' order in their pass number `cycle` (a seeded permutation, kept
        for the next item: consecutive items almost always read the same pass)."""
        if self._last_order[0] != cycle:
            order = np.random.default_rng((self.seed + ORDER_STREAM, cycle)).permutation(self.n_unlabelled)
            self._last_order = (cycle, order)
        return self._last_order[1]

    def unlabelled_positions(self, index: int) -> list[tuple[int, int]]:
        """(pass over the unlabelled frames, unlabelled frame) drawn for item `index` of this epoch."""
        start = (self.epoch * self.n_labelled + index) * self.ratio
        draws = []
        for position in range(start, start + self.ratio):
            cycle, offset = divmod(position, self.n_unlabelled)
            draws.append((cycle, int(self._order(cycle)[offset])))
        return draws

    def __getitem__(self, index: int) -> dict:
        items = [self.frames[index]]
        for cycle, u in self.unlabelled_positions(index):
            self.frames.unlabelled.set_epoch(cycle)  # a fresh augmentation on each pass over them
            items.append(self.frames[self.n_labelled + u])
        return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}


def flatten_groups(batch: dict) -> dict:
    """A collated batch of BalancedFrames groups (B, G, ...) as one batch of B * G frames; a batch of
    single frames is returned as it is."""
    if batch["image"].ndim != 5:
        return batch
    return {key: value.flatten(0, 1) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()}
