"""Segmentation and image-classification metrics (torch-free): training, the quantization gate and
`marsedge bench` all score with these.

Segmentation: all derived from one pixel confusion matrix.

Rows are the truth, columns the prediction; pixels whose truth is the ignore index (255) are
dropped. Classes absent from both truth and prediction have no defined IoU/recall/precision: they
are NaN per class and excluded from every mean (never counted as 1.0 or 0.0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from marsedge.terrain import CLASS_NAMES, IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a KxK pixel confusion matrix over batches; merges across processes with `+`."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add predicted and true class ids of the same shape (any batch layout)."""
        pred = np.asarray(pred).reshape(-1)
        target = np.asarray(target).reshape(-1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction has {pred.size} pixels, truth has {target.size}")
        keep = target != self.ignore_index
        t = target[keep].astype(np.int64)
        p = pred[keep].astype(np.int64)
        if t.size and (t.max() >= self.num_classes or p.max() >= self.num_classes or p.min() < 0):
            raise ValueError(f"class id outside 0..{self.num_classes - 1} in prediction or truth")
        k = self.num_classes
        self.matrix += np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different sizes")
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out.matrix = self.matrix + other.matrix
        return out

    def compute(self, class_names: tuple[str, ...] | list[str] | None = None) -> dict:
        return segmentation_metrics(self.matrix, class_names)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def segmentation_metrics(matrix: np.ndarray, class_names=None) -> dict:
    """Every metric of the papers from one confusion matrix.

    pixel_accuracy = trace / total
    IoU_c = TP / (TP + FP + FN); recall_c = TP / (TP + FN); precision_c = TP / (TP + FP)
    F1_c = 2 P R / (P + R) = 2 TP / (2 TP + FP + FN);
    mIoU, macro F1, MAcc (mean recall) over present classes;
    FW-IoU = sum_c freq_c * IoU_c, freq_c = truth pixels of c / all labelled pixels: the
    semi-supervised paper's "FACC" (86-89% beside ACC 92-94% in its Table 9). `facc` is kept as an
    alias of `fwiou` so old report columns keep their key; it is not sum_c freq_c * recall_c, which
    is pixel accuracy by algebra (sum_c TP_c / total).
    A class is present when it occurs in the truth or the prediction; absent classes are NaN.
    """
    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0]
    names = list(class_names or CLASS_NAMES[:k])
    names += [f"class{i}" for i in range(len(names), k)]
    tp = np.diag(m)
    truth = m.sum(axis=1)
    predicted = m.sum(axis=0)
    total = m.sum()
    iou = _safe_div(tp, truth + predicted - tp)
    recall = _safe_div(tp, truth)
    precision = _safe_div(tp, predicted)
    # F1 = 2PR / (P + R) = 2 TP / (truth + predicted): 0 for a class that is missed entirely or
    # predicted but never true (where P or R alone is undefined), NaN only for an absent class.
    f1 = _safe_div(2 * tp, truth + predicted)
    freq = truth / total if total > 0 else np.zeros(k)
    # a class with truth pixels always has an IoU; one without has freq 0, so NaN IoU adds nothing
    fwiou = float(np.sum(freq * np.nan_to_num(iou))) if total > 0 else float("nan")

    def mean(v: np.ndarray) -> float:
        v = v[~np.isnan(v)]
        return float(v.mean()) if v.size else float("nan")

    def per_class(v: np.ndarray) -> dict:
        return {names[i]: (None if np.isnan(v[i]) else float(v[i])) for i in range(k)}

    return {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "miou": mean(iou),
        "macro_f1": mean(f1),
        "macc": mean(recall),
        "fwiou": fwiou,
        "facc": fwiou,  # alias: the papers' FACC is the frequency-weighted IoU
        "iou": per_class(iou),
        "recall": per_class(recall),
        "precision": per_class(precision),
        "f1": per_class(f1),
        "pixels": int(total),
    }


# the one number a model is ranked by, per task: what the gates and the report's headline column use
HEADLINE = {"miou": "mIoU", "top1": "top-1"}


def headline(metrics: dict) -> tuple[str, str]:
    """(key, label) of the metrics dict's headline: mIoU for segmentation, top-1 for classification."""
    key = "miou" if "miou" in metrics else "top1"
    return key, HEADLINE[key]


def classification_metrics(logits: np.ndarray, targets: Sequence[int], classes: Sequence[str]) -> dict:
    """Top-1, top-5 (top-K when K < 5), balanced accuracy (mean recall over the classes present),
    per-class recall (NaN for a class the set lacks) and support, and the K x K confusion matrix
    (rows true, columns predicted)."""
    targets_arr = np.asarray(targets, dtype=np.int64)
    k = min(5, logits.shape[1])
    topk = np.argsort(-logits, axis=1)[:, :k]
    pred = topk[:, 0]
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (targets_arr, pred), 1)
    support = confusion.sum(1)
    recall = [float(confusion[c, c] / support[c]) if support[c] else math.nan for c in range(len(classes))]
    present = [r for r in recall if not math.isnan(r)]
    return {
        "top1": float((pred == targets_arr).mean()) if len(targets_arr) else math.nan,
        "top5": float((topk == targets_arr[:, None]).any(1).mean()) if len(targets_arr) else math.nan,
        "balanced_accuracy": float(np.mean(present)) if present else math.nan,
        "recall": dict(zip(classes, recall, strict=True)),
        "support": dict(zip(classes, support.tolist(), strict=True)),
        "confusion": confusion.tolist(),
    }


def plot_confusion(matrix: np.ndarray, path: str | Path, class_names=None, title: str = "") -> Path:
    """Row-normalised confusion matrix (each truth row sums to 1, as in the papers) to PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0]
    names = list(class_names or CLASS_NAMES[:k])
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2, 1.0 * k + 1.5))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
