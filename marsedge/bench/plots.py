"""The report's pictures, each drawn from results rows (plain dicts) into a PNG with matplotlib.

latency bars (p50 with a whisker to p99), accuracy-vs-latency scatter with its Pareto front,
per-class IoU bars per model, and the sample strip (input | truth | each model's mask as overlay).
Confusion matrices come from marsedge.metrics.plot_confusion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marsedge.io import atomic_write
from marsedge.terrain import IGNORE_INDEX, class_table, colorize


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    return atomic_write_and_close(fig, path)


def _log_x(ax, values: list[float]) -> bool:
    """Log x axis when the values span more than 20x (a torch row 100x slower would hide the rest)."""
    log = bool(values) and min(values) > 0 and max(values) / min(values) > 20
    if log:
        ax.set_xscale("log")
    return log


def atomic_write_and_close(fig, path: str | Path) -> Path:
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    _pyplot().close(fig)
    return out


def measured(rows: list[dict]) -> list[dict]:
    """Rows that have latency figures (failed rows have none)."""
    return [r for r in rows if r.get("latency")]


def latency_bars(rows: list[dict], path: str | Path) -> Path:
    """End-to-end and backend-only p50 per model, each with a whisker up to its p99."""
    plt = _pyplot()
    rows = measured(rows)
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.6 * len(rows)))
    for offset, key, colour in ((-0.2, "end_to_end", "#4c72b0"), (0.2, "backend_only", "#dd8452")):
        p50 = np.array([r["latency"][key]["p50"] for r in rows])
        p99 = np.array([r["latency"][key]["p99"] for r in rows])
        ax.barh(y + offset, p50, height=0.38, color=colour, label=f"{key.replace('_', ' ')} p50",
                xerr=[np.zeros_like(p50), np.maximum(p99 - p50, 0)], capsize=3, error_kw={"elinewidth": 1})
    ax.set_yticks(y, [r["id"] for r in rows])
    ax.invert_yaxis()
    log = _log_x(ax, [r["latency"]["backend_only"]["p50"] for r in rows])
    ax.set_xlabel("latency per frame, ms" + (", log scale" if log else "") + " (whisker: p50 to p99)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both axes (lower x = latency, higher y = accuracy),
    ordered by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def accuracy_latency(rows: list[dict], path: str | Path) -> Path:
    """mIoU against end-to-end p50 latency; the Pareto front joined by a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    draw_accuracy_latency(ax, rows)
    return _save(fig, path)


def draw_accuracy_latency(ax, rows: list[dict]) -> list:
    """The scatter, its Pareto front and one label per point; returns the labels (matplotlib
    Annotations). Labels sit in a column right of the axes, in the points' accuracy order and evenly
    spaced, each joined to its point by a thin line: an FP32 model and its INT8 copy often sit on top
    of each other, and labels placed beside the points then overlap."""
    from marsedge.metrics import headline

    rows = [r for r in measured(rows) if r.get("accuracy")]
    key, label = headline(rows[0]["accuracy"]["metrics"]) if rows else ("miou", "mIoU")
    points = [(r["latency"]["end_to_end"]["p50"], r["accuracy"]["metrics"][key]) for r in rows]
    front = pareto_front(points)
    for i, (x, y) in enumerate(points):
        ax.scatter(x, y, s=60, marker="o" if i in front else "x", color="#4c72b0" if i in front else "#999")
    if front:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="#4c72b0",
                drawstyle="steps-post", label="Pareto front")
        ax.legend(fontsize=8, loc="best")  # matplotlib keeps it off the points
    log = _log_x(ax, [p[0] for p in points])
    ax.set_xlabel("end-to-end latency p50, ms" + (" (log scale)" if log else ""))
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    order = sorted(range(len(points)), key=lambda i: -points[i][1])  # the most accurate on top
    labels = []
    for slot, i in enumerate(order):
        y = 1.0 - (slot + 0.5) / max(len(order), 1)
        labels.append(ax.annotate(rows[i]["id"], points[i], xytext=(1.03, y), textcoords="axes fraction",
                                  fontsize=8, va="center", annotation_clip=False,
                                  arrowprops={"arrowstyle": "-", "color": "#bbb", "lw": 0.6}))
    return labels


def class_iou_bars(rows: list[dict], class_order: list[str], path: str | Path, metric: str = "iou") -> Path:
    """Per-class IoU (or `metric`: a classifier's "recall"), one bar per model in each class group
    (absent classes are left blank)."""
    plt = _pyplot()
    rows = [r for r in rows if r.get("accuracy")]
    x = np.arange(len(class_order))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(class_order)), 4))
    for i, r in enumerate(rows):
        per_class = r["accuracy"]["metrics"][metric]
        values = [np.nan if per_class.get(c) is None else per_class[c] for c in class_order]
        ax.bar(x - 0.4 + width * (i + 0.5), values, width=width, label=r["id"])
    many = len(class_order) > 8  # a classifier's 12-24 class names need slanting
    ax.set_xticks(x, class_order, rotation=30 if many else 0, ha="right" if many else "center")
    ax.set_ylabel("IoU" if metric == "iou" else metric)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def overlay(image: np.ndarray, mask: np.ndarray, table: list[dict] | None = None,
            alpha: float = 0.5) -> np.ndarray:
    """Blend a class mask's colours over a frame; ignore (255) pixels show the frame alone."""
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
    if rgb.shape[:2] != mask.shape:
        import cv2

        rgb = cv2.resize(rgb, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_AREA)
    colour = colorize(mask, table).astype(np.float32)
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colour
    keep = (mask == IGNORE_INDEX)[:, :, None]
    return np.where(keep, rgb, blended).astype(np.uint8)


def sample_strip(image: np.ndarray, label: np.ndarray, masks: list[tuple[str, np.ndarray]],
                 path: str | Path, title: str = "", table: list[dict] | None = None) -> Path:
    """One frame in a row: input | truth | each model's mask over the frame, titled by model."""
    plt = _pyplot()
    panels = [("input", image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)),
              ("truth", overlay(image, label, table))]
    panels += [(name, overlay(image, mask, table)) for name, mask in masks]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    for ax, (name, picture) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(picture)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    from matplotlib.patches import Patch

    legend = [Patch(color=np.array(c["colour"]) / 255, label=c["name"]) for c in (table or class_table())]
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return atomic_write_and_close(fig, path)
