"""Per-pixel confidence: the maximum softmax probability, beside the argmax, only when asked.

    ids, confidence = mask_and_confidence(logits, out_hw)           # uint8, float32 0..1
    mask = unknown_below(ids, confidence, 0.6)                      # class 255 where unsure

The class id of a pixel is its argmax (`predict.argmax_ids`, the default path, untouched); its
confidence is the probability the softmax gives that class, 1 / sum_c exp(l_c - max_c l_c), from
the same logits in the same call. Both are resized to the frame with nearest neighbour (THE
resolution policy of `marsedge.edge.predict`), so every pixel's confidence is that of its own class
id. Nothing here runs unless confidence is requested (`--visualize confidence`, `--min-confidence`,
the node's `confidence` topic): the default outputs pay no exponentials.

`--min-confidence P` maps pixels below P to 255 ("unknown", the ignore id): masks, class fractions
and the hazard shares then count only pixels the model is sure of. frames.jsonl's `mean_confidence`
of a class is over the pixels the argmax gave it, before that mapping.
"""

from __future__ import annotations

import cv2
import numpy as np

from marsedge.edge.predict import argmax_ids
from marsedge.errors import FrameError
from marsedge.terrain import IGNORE_INDEX


def check_finite(logits: np.ndarray) -> None:
    """Non-finite logits are the frame's failure, never a mask or a confidence."""
    if not np.isfinite(logits).all():
        raise FrameError("the model's logits are not finite (NaN or infinity)")


def max_softmax(logits: np.ndarray) -> np.ndarray:
    """float N,K,H,W logits -> float32 N,H,W probability of the most probable class, class plane by
    class plane (numpy's reductions over the class axis of N,K,H,W are strided and slow)."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    out = np.empty((logits.shape[0], *logits.shape[2:]), np.float32)
    for n, planes in enumerate(logits):
        top = planes[0].copy()
        for plane in planes[1:]:
            np.maximum(top, plane, out=top)
        total = np.zeros_like(top)
        for plane in planes:
            total += np.exp(plane - top)
        np.divide(1.0, total, out=out[n])
    return out


def mask_and_confidence(logits: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """float N,K,H,W logits -> (uint8 class ids, float32 max softmax probability), each N,h,w at
    `out_hw` (nearest). Non-finite logits are the frame's failure: no confidence can be given."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be N,K,H,W, got shape {logits.shape}")
    check_finite(logits)
    ids, confidence = argmax_ids(logits), max_softmax(logits)
    h, w = out_hw
    if ids.shape[1:] != (h, w):
        ids = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in ids])
        confidence = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_NEAREST) for c in confidence])
    return ids, confidence


def unknown_below(mask: np.ndarray, confidence: np.ndarray, min_confidence: float | None) -> np.ndarray:
    """The mask with every pixel whose confidence is below `min_confidence` set to 255 (unknown)."""
    if not min_confidence:
        return mask
    return np.where(confidence < np.float32(min_confidence), np.uint8(IGNORE_INDEX), mask).astype(np.uint8)


def class_confidence(mask: np.ndarray, confidence: np.ndarray, class_table: list[dict]) -> dict:
    """Mean confidence of the pixels of each class, by name (None for a class with no pixel)."""
    counts = np.bincount(mask.reshape(-1), minlength=256)
    sums = np.bincount(mask.reshape(-1), weights=confidence.reshape(-1).astype(np.float64), minlength=256)
    return {str(c["name"]): round(float(sums[int(c["id"])] / counts[int(c["id"])]), 5)
            if counts[int(c["id"])] else None for c in class_table}


def confidence_bytes(confidence: np.ndarray) -> np.ndarray:
    """float 0..1 -> uint8 0..255 (rounded): the 8-bit confidence image."""
    return np.clip(confidence * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)


class Confidence:
    """The confidence postprocessing one run asked for: what edge-run's pipeline and the ROS 2 node
    call instead of `predict.logits_to_mask` when confidence is wanted."""

    def __init__(self, class_table: list[dict], min_confidence: float | None = None) -> None:
        self.class_table, self.min_confidence = class_table, min_confidence

    def apply(self, logits: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, dict]:
        """One frame's logits (1,K,H,W) -> (mask with unknown pixels, confidence 0..1, mean
        confidence per class name)."""
        ids, confidence = mask_and_confidence(logits, out_hw)
        ids, confidence = ids[0], confidence[0]
        means = class_confidence(ids, confidence, self.class_table)
        return unknown_below(ids, confidence, self.min_confidence), confidence, means
