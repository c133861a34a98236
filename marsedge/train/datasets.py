"""Torch datasets over the AI4Mars reader: composition (label fraction, mixed domain), joint
augmentation, THE preprocessing, and the class frequencies weighted losses need.

    SegmentationFrames(AI4MarsDataset, spec, augment) [i] -> {"image": float C,H,W, "label": long H,W,
                                                            "index": i}

Augmentation randomness comes from (seed, epoch, index) (`marsedge.data.augment.sample_rng`), so
a frame looks the same in a resumed run, under DDP and with any number of loader workers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from marsedge.data.ai4mars import AI4MarsDataset, list_items
from marsedge.data.augment import JointAugmentConfig, geometric, photometric, sample_rng
from marsedge.data.preprocess import PreprocessSpec, preprocess, resize_label
from marsedge.errors import DataError
from marsedge.io import atomic_write_json
from marsedge.train.config import DataConfig


class LabelledThenUnlabelled(Dataset):
    """A labelled set followed by an optional unlabelled one (semi-supervised training, distillation).

    Items gain `index` (their position in this set) and `labelled`; `set_epoch` reaches both parts.
    """

    def __init__(self, labelled: Dataset, unlabelled: Dataset | None = None) -> None:
        self.labelled = labelled
        self.unlabelled = unlabelled

    @property
    def n_labelled(self) -> int:
        return len(self.labelled)

    def set_epoch(self, epoch: int) -> None:
        for part in (self.labelled, self.unlabelled):
            if part is not None:
                part.set_epoch(epoch)

    def __len__(self) -> int:
        return self.n_labelled + (len(self.unlabelled) if self.unlabelled is not None else 0)

    def __getitem__(self, index: int) -> dict:
        n = self.n_labelled
        item = self.labelled[index] if index < n else self.unlabelled[index - n]
        return {**item, "index": index, "labelled": index < n}


class SegmentationFrames(Dataset):
    """Labelled AI4Mars frames as training/evaluation tensors (augmentation off when `augment` is None)."""

    def __init__(self, source: AI4MarsDataset, spec: PreprocessSpec,
                 augment: JointAugmentConfig | None = None, seed: int = 0) -> None:
        self.source = source
        self.spec = spec
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the loop before each epoch: a new epoch draws new augmentations."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        sample = self.source[index]
        if sample.label is None:
            raise DataError(f"{self.source.items[index].image}: no label (training needs labelled frames)")
        image, label = sample.image, sample.label
        rng = sample_rng(self.seed, self.epoch, index) if self.augment is not None else None
        if rng is not None:
            image, label = geometric(image, label, self.augment, rng)
        x = preprocess(image, self.spec)
        y = resize_label(label, self.spec.height, self.spec.width)
        if rng is not None:
            x = photometric(x, self.augment, rng)
        return {"image": torch.from_numpy(np.ascontiguousarray(x)),
                "label": torch.from_numpy(y.astype(np.int64)), "index": index}


def training_set(cfg: DataConfig, seed: int) -> AI4MarsDataset:
    """The training frames a config composes: the train splits together, then the mixed-domain
    selection (when m2020_fraction is set), then the label fraction stratified by mission, then the
    max_train cap. Every selection is seeded and stable across machines."""
    from marsedge.data import sampling

    items = [item for split in cfg.train_splits for item in list_items(cfg.root, split)]
    if cfg.m2020_fraction is not None:
        items = sampling.mixed_domain(items, total=cfg.mixed_cap, m2020_fraction=cfg.m2020_fraction,
                                      seed=seed)
    if cfg.label_fraction < 1.0:
        items = sampling.label_fraction(items, cfg.label_fraction, seed=seed)
    if cfg.max_train is not None:
        items = items[: cfg.max_train]
    if not items:
        raise DataError(f"{cfg.root}: the configured training set is empty (splits {cfg.train_splits})")
    return AI4MarsDataset(cfg.root, "+".join(cfg.train_splits), four_class=cfg.four_class, items=items)


def test_sets(cfg: DataConfig) -> dict[str, AI4MarsDataset]:
    """The gold test set(s), in config order (the first drives early stopping)."""
    out = {}
    for split in cfg.test_splits:
        ds = AI4MarsDataset(cfg.root, split, four_class=cfg.four_class)
        if cfg.max_test is not None:
            ds = AI4MarsDataset(cfg.root, split, four_class=cfg.four_class, items=ds.items[: cfg.max_test])
        if len(ds) == 0:
            raise DataError(f"{cfg.root}: test split {split!r} has no frames")
        out[split] = ds
    return out


def _fingerprint(dataset: AI4MarsDataset, num_classes: int) -> str:
    h = hashlib.sha256(f"{dataset.four_class}|{num_classes}".encode())
    for item in dataset.items:
        h.update(f"{item.mission}/{item.name}\n".encode())
    return h.hexdigest()[:16]


def count_class_pixels(dataset: AI4MarsDataset, num_classes: int, progress: bool = False) -> np.ndarray:
    """Labelled pixels per class over the dataset's labels (masks folded in) at their native size."""
    from marsedge.data.stats import label_histogram

    return label_histogram(dataset.items, four_class=dataset.four_class, progress=progress)[:num_classes]


def class_frequencies(dataset: AI4MarsDataset, num_classes: int, cache_dir: str | Path,
                      progress: bool = False) -> np.ndarray:
    """f_c = pixels of class c / labelled pixels, computed once per training set and cached as JSON
    under cache_dir (keyed by the set's frame names), so every later run and rank reads the file."""
    path = Path(cache_dir) / f"class_frequencies_{_fingerprint(dataset, num_classes)}.json"
    if path.is_file():
        return np.asarray(json.loads(path.read_text())["frequencies"], dtype=np.float64)
    counts = count_class_pixels(dataset, num_classes, progress)
    if counts.sum() == 0:
        raise DataError(f"{dataset.root}: the training labels have no labelled pixel")
    freq = counts / counts.sum()
    atomic_write_json(path, {"frames": len(dataset), "pixels": counts.tolist(), "frequencies": freq.tolist()})
    return freq
