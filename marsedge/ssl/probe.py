"""A dense probe of frozen backbone features: do the pretrained features separate the terrain classes?

    labelled frame --backbone (eval mode, no grad)--> F: C x h x w (its output stride)
    label (H x W)  --the most frequent labelled class of the pixels in each cell--> y: h x w
                     (a cell with no labelled pixel is ignore, like a 255 pixel)
    f = F[:, i, j] / ||F[:, i, j]||_2     every feature pixel, L2-normalised

    nearest centroid (`centroid`):  p_c = m_c / ||m_c||, m_c = mean of f over train pixels with y = c
                                    predict argmax_c  f . p_c
    k nearest neighbours (`knn`):   a seeded sample of at most `bank` train pixels b_1..b_B;
                                    predict the most frequent class among the k largest f . b_j
                                    (a tie: the smallest class id)

The probe is fitted on the features of a few labelled train frames, then classifies every feature
pixel of the val frames; the confusion matrix of those against the val labels (on the same grid)
gives mIoU and pixel accuracy through `marsedge.metrics` (0-1 fractions). A class with no train
pixel has no prototype and is never predicted. Nothing is trained: the probe costs one forward pass
over its frames, and the same weights give the same result.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from marsedge.errors import DataError
from marsedge.metrics import segmentation_metrics
from marsedge.terrain import CLASS_NAMES, IGNORE_INDEX

QUERY_CHUNK = 2048  # val pixels per similarity matrix in the kNN probe (bounds its memory)


def grid_labels(labels: torch.Tensor, height: int, width: int, num_classes: int) -> torch.Tensor:
    """N x H x W class ids -> N x height x width: the most frequent labelled class among the pixels
    of each cell (a tie: the smallest id); ignore where a cell holds no labelled pixel. Ids outside
    0..num_classes-1 count as ignore."""
    n, h_in, w_in = labels.shape
    rows = torch.arange(h_in) * height // h_in
    cols = torch.arange(w_in) * width // w_in
    cell = (rows[:, None] * width + cols[None, :]).expand(n, -1, -1)
    cell = cell + torch.arange(n)[:, None, None] * (height * width)
    keep = (labels >= 0) & (labels < num_classes)
    counts = torch.bincount(cell[keep] * num_classes + labels[keep].long(),
                            minlength=n * height * width * num_classes).view(-1, num_classes)
    out = counts.argmax(dim=1)
    out[counts.sum(dim=1) == 0] = IGNORE_INDEX
    return out.view(n, height, width)


def labelled_pixels(maps: torch.Tensor, labels: torch.Tensor,
                    num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(P x C L2-normalised features, P class ids) of the cells of `maps` (N x C x h x w) that the
    N x H x W `labels` mark with a class (see `grid_labels`)."""
    grid = grid_labels(labels, maps.shape[2], maps.shape[3], num_classes)
    features = F.normalize(maps.float().permute(0, 2, 3, 1).reshape(-1, maps.shape[1]), dim=1)
    targets = grid.reshape(-1)
    keep = targets != IGNORE_INDEX
    return features[keep], targets[keep]


class PixelProbe:
    """The nearest-centroid or kNN classifier of L2-normalised feature pixels (formulas: module doc)."""

    def __init__(self, num_classes: int, method: Literal["centroid", "knn"] = "centroid", k: int = 20,
                 bank: int = 20000, seed: int = 0) -> None:
        self.num_classes, self.method, self.k, self.bank, self.seed = num_classes, method, k, bank, seed

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> PixelProbe:
        """`features`: P x C, L2-normalised; `labels`: P class ids."""
        if self.method == "centroid":
            sums = torch.zeros(self.num_classes, features.shape[1], dtype=features.dtype)
            sums.index_add_(0, labels, features)
            self.present = torch.bincount(labels, minlength=self.num_classes) > 0
            self.prototypes = F.normalize(sums, dim=1)
        else:
            if len(labels) > self.bank:
                rng = np.random.default_rng(self.seed)
                pick = torch.from_numpy(np.sort(rng.choice(len(labels), self.bank, replace=False)))
                features, labels = features[pick], labels[pick]
            self.bank_features, self.bank_labels = features, labels
        return self

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """The class of each of the P x C L2-normalised feature rows."""
        if self.method == "centroid":
            similarity = features @ self.prototypes.T
            similarity[:, ~self.present] = -torch.inf
            return similarity.argmax(dim=1)
        k = min(self.k, len(self.bank_labels))
        out = []
        for chunk in features.split(QUERY_CHUNK):
            nearest = (chunk @ self.bank_features.T).topk(k, dim=1).indices
            votes = F.one_hot(self.bank_labels[nearest], self.num_classes).sum(dim=1)
            out.append(votes.argmax(dim=1))  # argmax returns the first maximum: the smallest id
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


class ProbeEvaluator:
    """`evaluator(model, state) -> dict` for the training loop: the probe fitted on `train` frames'
    features and scored on `val` (datasets of {"image", "label"} items, un-augmented).

    The result has the keys of a segmentation evaluation (`miou`, `pixel_accuracy`, ... and
    `val/<metric>`, `val/confusion` on the feature grid) and `probe_train_pixels`. Every rank
    computes the whole probe (it is small), so all return the same dict. `selects`: whether best.pt
    and early stopping follow it (False: the run only watches it)."""

    splits = ("val",)

    def __init__(self, train: Dataset, val: Dataset, num_classes: int, method: Literal["centroid", "knn"],
                 k: int, bank: int, seed: int, batch_size: int, selects: bool = False) -> None:
        self.train = DataLoader(train, batch_size=batch_size, shuffle=False)
        self.val = DataLoader(val, batch_size=batch_size, shuffle=False)
        self.num_classes = num_classes
        self.class_names = list(CLASS_NAMES[:num_classes])
        self.probe = PixelProbe(num_classes, method, k, bank, seed)
        self.selects = selects

    def _batches(self, backbone: nn.Module, loader: DataLoader, device: torch.device):
        """(features, classes) of the labelled cells of each batch of `loader`."""
        for batch in loader:
            maps = backbone(batch["image"].to(device))["out"].cpu()
            yield labelled_pixels(maps, batch["label"], self.num_classes)

    def __call__(self, model: nn.Module, state) -> dict:
        train = list(self._batches(model.backbone, self.train, state.device))
        train_y = torch.cat([y for _, y in train])
        if not len(train_y):
            raise DataError(f"the probe's {len(self.train.dataset)} train frame(s) have no labelled pixel")
        self.probe.fit(torch.cat([f for f, _ in train]), train_y)
        k = self.num_classes
        matrix = np.zeros((k, k), dtype=np.int64)
        # the train cells' features are held (the probe needs them all); val streams batch by batch
        for val_f, val_y in self._batches(model.backbone, self.val, state.device):
            predicted = self.probe.predict(val_f)
            matrix += torch.bincount(val_y * k + predicted, minlength=k * k).view(k, k).numpy()
        metrics = segmentation_metrics(matrix, self.class_names)
        result = {key: v for key, v in metrics.items() if not isinstance(v, dict)}
        result.update({f"val/{key}": v for key, v in metrics.items()})
        result["val/confusion"] = matrix.tolist()  # rows truth, columns prediction (feature cells)
        result["probe_train_pixels"] = len(train_y)
        return result
