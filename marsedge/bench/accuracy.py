"""Accuracy of one model on a labelled split, and pixel agreement between two models' masks.

Masks are compared with the labels at the labels' own resolution: the logits' argmax is resized
back (nearest neighbour, so ids stay ids) to the label's size, the way a rover would map its mask
onto the frame it took. Every metric comes from marsedge.metrics (one confusion matrix); each
frame's own mIoU and pixel accuracy are kept too, so the report can show the worst frames.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.errors import DataError
from marsedge.metrics import ConfusionMatrix, segmentation_metrics
from marsedge.terrain import CLASS_NAMES


def logits_to_mask(logits: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """float N,K,H,W logits -> uint8 N,h,w class ids at the output size `out_hw`."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be N,K,H,W, got shape {logits.shape}")
    ids = np.argmax(logits, axis=1).astype(np.uint8)
    h, w = out_hw
    if ids.shape[1:] == (h, w):
        return ids
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in ids])


def predict_mask(backend, image: np.ndarray, spec: PreprocessSpec, out_hw: tuple[int, int]) -> np.ndarray:
    """One frame -> uint8 mask of size out_hw."""
    return logits_to_mask(backend.infer(preprocess(image, spec)[None]), out_hw)[0]


def evaluate(backend, samples: Iterable, spec: PreprocessSpec, num_classes: int,
             class_names: list[str] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Run every labelled sample; return the `accuracy` block of a results row and the masks by name.

    The block holds the marsedge.metrics dict, the confusion counts and per-frame mIoU / accuracy.
    """
    names = list(class_names or CLASS_NAMES[:num_classes])
    total = ConfusionMatrix(num_classes)
    per_frame = []
    masks: dict[str, np.ndarray] = {}
    for sample in samples:
        if sample.label is None:
            raise DataError(f"frame {sample.name} has no label: accuracy needs a labelled split")
        mask = predict_mask(backend, sample.image, spec, sample.label.shape[:2])
        frame = ConfusionMatrix(num_classes)
        frame.update(mask, sample.label)
        total += frame
        m = segmentation_metrics(frame.matrix, names)
        per_frame.append({"name": sample.name, "miou": _finite(m["miou"]),
                          "pixel_accuracy": _finite(m["pixel_accuracy"])})
        masks[sample.name] = mask
    if not per_frame:
        raise DataError("the split has no frames to evaluate")
    block = {
        "metrics": segmentation_metrics(total.matrix, names),
        "confusion": total.matrix.tolist(),
        "class_names": names,
        "per_frame": per_frame,
        "agreement": None,
    }
    return block, masks


def pixel_agreement(masks: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Fraction of pixels, over all frames both hold, where the two models predict the same class."""
    same = total = 0
    for name, mask in masks.items():
        ref = reference.get(name)
        if ref is None:
            continue
        if ref.shape != mask.shape:
            raise ValueError(f"frame {name}: mask shapes differ {mask.shape} vs {ref.shape}")
        same += int(np.count_nonzero(mask == ref))
        total += mask.size
    if total == 0:
        raise ValueError("the two models share no frames")
    return same / total


def agreement_block(value: float, reference: str, min_agreement: float) -> dict:
    return {"reference": reference, "value": value, "min_agreement": min_agreement,
            "passed": bool(value >= min_agreement)}


def _finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
