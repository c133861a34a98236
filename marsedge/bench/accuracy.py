"""Accuracy of one model on a labelled split, as the `accuracy` block of a results row.

Prediction and scoring are `marsedge.edge.predict`'s (the resolution policy and the class folding
are documented there), so a bench row and the quantization gate report the same mIoU for the same
model and split. This module only lays the Scores out as results.json stores them. A classifier's
block has task "classification" and classification metrics (top1, top5, balanced_accuracy, recall,
support, confusion); its per_frame entries name the true and predicted class.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from marsedge.edge.predict import Scores, score


def accuracy_block(scores: Scores) -> dict:
    """The `accuracy` block of a results row (agreement is filled in by the parent)."""
    return {
        "task": scores.task,
        "metrics": scores.metrics,
        "confusion": scores.confusion.matrix.tolist(),
        "class_names": scores.class_names,
        "per_frame": scores.per_frame,
        "agreement": None,
    }


def evaluate(backend, samples: Iterable) -> tuple[dict, dict[str, np.ndarray]]:
    """Score every labelled sample; return the `accuracy` block and the masks by frame name."""
    scores = score(backend, samples)
    return accuracy_block(scores), scores.masks


def agreement_block(value: float, reference: str) -> dict:
    """Pixel (top-1) agreement with the reference's masks: information, not a verdict."""
    return {"reference": reference, "value": value}
