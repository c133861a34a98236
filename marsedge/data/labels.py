"""Crowd label merging and agreement scores (the AI4Mars dataset paper, sections 3.2 and 3.3).

Merging: a pixel takes class c when at least `min_votes` labelers gave it c and c holds more than
`min_agreement` of the votes given to that pixel; labelers who left the pixel unlabelled (255) do
not vote. Otherwise the pixel is unlabelled. The crowd rule is (3, 0.65): the paper's pixel X
(2 unlabelled, 6 soil, 1 sand, 1 bedrock) becomes soil (6 of 8 = 75%), its pixel Y (3 unlabelled,
3 soil, 2 sand, 1 bedrock) stays unlabelled (3 of 6 = 50%). The expert gold sets use 100%
agreement with 1, 2 or 3 votes (min1, min2, min3).

Agreement score of one label: the mean Jaccard index between it and each other label of the same
image, where the Jaccard index of two class maps is the mean IoU over the classes either one uses.

Both are vectorised over the stack of labels: one image with 10 labels of 1024x1024 takes a
fraction of a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from marsedge.errors import DataError
from marsedge.terrain import IGNORE_INDEX, NUM_TERRAIN_CLASSES

GOLD_RULES = {f"gold-min{k}": {"min_votes": k, "min_agreement": 1.0} for k in (1, 2, 3)}


def _stack(labels: Sequence[np.ndarray] | np.ndarray, num_classes: int) -> np.ndarray:
    stack = np.asarray(labels) if isinstance(labels, np.ndarray) else np.stack(list(labels))
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(f"expected a non-empty stack of HxW labels, got shape {stack.shape}")
    bad = (stack != IGNORE_INDEX) & (stack >= num_classes)
    if bad.any():
        raise ValueError(f"label value {int(stack[bad][0])} outside 0..{num_classes - 1} and 255")
    return stack.astype(np.uint8, copy=False)


def vote_counts(
    labels: Sequence[np.ndarray] | np.ndarray, num_classes: int = NUM_TERRAIN_CLASSES
) -> np.ndarray:
    """KxHxW number of labelers that gave each pixel each class (unlabelled votes not counted)."""
    stack = _stack(labels, num_classes)
    counts = np.empty((num_classes, *stack.shape[1:]), dtype=np.uint16)
    for c in range(num_classes):
        np.sum(stack == c, axis=0, dtype=np.uint16, out=counts[c])
    return counts


def merge_labels(
    labels: Sequence[np.ndarray] | np.ndarray,
    min_votes: int = 3,
    min_agreement: float = 0.65,
    num_classes: int = NUM_TERRAIN_CLASSES,
) -> np.ndarray:
    """Merge several HxW labels (class ids, 255 unlabelled) of one image into one HxW label.

    Accepted: top-class votes >= min_votes and top-class share > min_agreement (or all votes agree,
    which is how the gold sets' 100% rule is expressed with min_agreement=1.0).
    """
    counts = vote_counts(labels, num_classes)
    top = counts.max(axis=0)
    winner = counts.argmax(axis=0).astype(np.uint8)
    given = counts.sum(axis=0, dtype=np.uint16)
    share_ok = (top.astype(np.float32) > np.float32(min_agreement) * given) | (top == given)
    accepted = (top >= max(min_votes, 1)) & share_ok
    return np.where(accepted, winner, np.uint8(IGNORE_INDEX)).astype(np.uint8)


def pairwise_jaccard(
    labels: Sequence[np.ndarray] | np.ndarray, num_classes: int = NUM_TERRAIN_CLASSES
) -> np.ndarray:
    """LxL Jaccard index between every pair of labels: mean IoU over the classes either one uses.

    Pairs that share no class at all (both empty) are NaN. The diagonal is 1 where a label is
    non-empty.
    """
    stack = _stack(labels, num_classes)
    n = stack.shape[0]
    flat = stack.reshape(n, -1)
    iou_sum = np.zeros((n, n), dtype=np.float64)
    classes_used = np.zeros((n, n), dtype=np.int64)
    for c in range(num_classes):
        masks = (flat == c).astype(np.float32)
        sizes = masks.sum(axis=1, dtype=np.float64)
        if not sizes.any():
            continue
        inter = (masks @ masks.T).astype(np.float64)  # exact: counts stay far below 2**24 per row pair
        union = sizes[:, None] + sizes[None, :] - inter
        used = union > 0
        iou_sum += np.where(used, inter / np.maximum(union, 1), 0.0)
        classes_used += used
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(classes_used > 0, iou_sum / np.maximum(classes_used, 1), np.nan)


def agreement_scores(
    labels: Sequence[np.ndarray] | np.ndarray, num_classes: int = NUM_TERRAIN_CLASSES
) -> np.ndarray:
    """Per-label agreement score: mean Jaccard index with each other label of the image (NaN alone)."""
    jac = pairwise_jaccard(labels, num_classes)
    n = jac.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    off = ~np.eye(n, dtype=bool)
    scores = np.full(n, np.nan)
    for i in range(n):
        row = jac[i][off[i]]
        row = row[~np.isnan(row)]
        if row.size:
            scores[i] = row.mean()
    return scores


def merge_crowd_folder(
    crowd: Path,
    out: Path,
    scores_csv: Path,
    suffix: str = "",
    min_votes: int = 3,
    min_agreement: float = 0.65,
    progress: bool = True,
) -> dict:
    """Merge CROWD/<image>/<labeler>.png into OUT/<image><suffix>.png; agreement scores to a CSV.

    Every label is checked (8-bit, values 0..3 and 255, one size per image); a bad one stops the
    run with its path. Returns counts and the agreement distribution for the summary line.
    """
    from tqdm import tqdm

    from marsedge.data.ai4mars import read_label
    from marsedge.io import atomic_write_bytes, atomic_write_text

    if not crowd.is_dir():
        raise DataError(f"crowd label folder not found: {crowd}")
    images = sorted(p for p in crowd.iterdir() if p.is_dir())
    if not images:
        raise DataError(f"no per-image folders of crowd labels in {crowd}")
    rows, scores, labelled, pixels, n_labels = ["image,labeler,agreement"], [], 0, 0, 0
    for folder in tqdm(images, desc="merge", unit="image", disable=not progress):
        paths = sorted(folder.glob("*.png"))
        if not paths:
            raise DataError(f"no label PNGs in {folder}")
        labels = [read_label(p) for p in paths]
        for p, lab in zip(paths, labels, strict=True):
            if lab.shape != labels[0].shape:
                raise DataError(
                    f"label {p} is {lab.shape[1]}x{lab.shape[0]}, "
                    f"{paths[0].name} is {labels[0].shape[1]}x{labels[0].shape[0]}"
                )
        merged = merge_labels(labels, min_votes, min_agreement)
        _, png = cv2.imencode(".png", merged)
        atomic_write_bytes(out / f"{folder.name}{suffix}.png", png.tobytes())
        for p, score in zip(paths, agreement_scores(labels), strict=True):
            rows.append(f"{folder.name},{p.stem},{'' if np.isnan(score) else f'{score:.4f}'}")
            if not np.isnan(score):
                scores.append(score)
        labelled += int((merged != IGNORE_INDEX).sum())
        pixels += merged.size
        n_labels += len(paths)
    atomic_write_text(scores_csv, "\n".join(rows) + "\n")
    return {
        "images": len(images),
        "labels": n_labels,
        "labelled_percent": 100.0 * labelled / max(pixels, 1),
        "agreement_mean": float(np.mean(scores)) if scores else float("nan"),
        "agreement_p20": float(np.percentile(scores, 20)) if scores else float("nan"),
    }
