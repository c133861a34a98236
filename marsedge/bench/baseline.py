"""The data's intensity-only baseline: how well brightness alone segments a labelled split.

For every grey level (0-255) it takes the class most often labelled at that level on the split
itself, and scores that lookup table on the same pixels. No rule that sees only a pixel's
brightness can do better on this split, so a model below it has learnt less than the brightness of
the terrain already tells; the report warns about such a model. Colour frames are averaged to grey.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from marsedge.metrics import segmentation_metrics
from marsedge.terrain import IGNORE_INDEX


def intensity_baseline(samples: Iterable, num_classes: int) -> dict | None:
    """{"pixel_accuracy", "miou"} of the best grey-level lookup on these samples; None when they
    carry no segmentation labels (a classification set)."""
    joint = np.zeros((256, num_classes), dtype=np.int64)  # grey level x class
    for sample in samples:
        label = getattr(sample, "label", None)
        if not isinstance(label, np.ndarray) or label.ndim != 2:
            return None
        grey = sample.image if sample.image.ndim == 2 else sample.image.mean(axis=2).astype(np.uint8)
        keep = (label != IGNORE_INDEX) & (label < num_classes)
        joint += np.bincount(grey[keep].astype(np.int64) * num_classes + label[keep],
                             minlength=256 * num_classes).reshape(256, num_classes)
    if joint.sum() == 0:
        return None
    guess = joint.argmax(axis=1)  # the lookup table: grey level -> class
    truth = np.broadcast_to(np.arange(num_classes)[None, :], joint.shape)
    predicted = np.broadcast_to(guess[:, None], joint.shape)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), joint)  # truth j at a level predicted as its guess
    metrics = segmentation_metrics(confusion)
    return {"pixel_accuracy": float(metrics["pixel_accuracy"]), "miou": float(metrics["miou"])}
