"""Dataset statistics (`marsedge data stats DIR`): image counts and class composition.

For every split present in an AI4Mars tree it counts the images and the label pixels of each class
(with the masks folded in: rover, background), the unlabelled pixels, and each class's percent of
the labelled pixels. Only label and mask PNGs are read, in a few threads (OpenCV decodes without
the GIL). `plot_composition` draws the percentages as a grouped bar chart (matplotlib, Agg).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from marsedge.data.ai4mars import Item, available_splits, list_items, load_label
from marsedge.errors import DataError
from marsedge.terrain import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES


def label_histogram(
    items: list[Item], four_class: bool = False, threads: int = 4, progress: bool = False
) -> np.ndarray:
    """256-bin histogram of label values over the items (class ids, 255 unlabelled)."""
    from tqdm import tqdm

    def count(item: Item) -> np.ndarray:
        return np.bincount(load_label(item, four_class=four_class).ravel(), minlength=256)

    total = np.zeros(256, dtype=np.int64)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for hist in tqdm(pool.map(count, items), total=len(items), disable=not progress, desc="labels"):
            total += hist
    return total


def split_composition(items: list[Item], histogram: np.ndarray) -> dict:
    labelled = int(histogram[:NUM_CLASSES].sum())
    missions = sorted({item.mission for item in items})
    return {
        "mission": missions[0] if len(missions) == 1 else missions,
        "images": len(items),
        "pixels": {name: int(histogram[c]) for c, name in enumerate(CLASS_NAMES)},
        "unlabelled_pixels": int(histogram[IGNORE_INDEX]),
        "percent": {
            name: (100.0 * histogram[c] / labelled if labelled else 0.0) for c, name in enumerate(CLASS_NAMES)
        },
        "labelled_percent": 100.0 * labelled / max(1, int(histogram.sum())),
    }


def dataset_stats(root: str | Path, four_class: bool = False, progress: bool = False) -> dict:
    """Composition of every labelled split found under root, plus the count of unlabelled frames."""
    splits = {}
    if not Path(root).is_dir():
        raise DataError(f"dataset folder not found: {root}")
    for split in available_splits(root):
        items = list_items(root, split)
        if items:
            splits[split] = split_composition(items, label_histogram(items, four_class, progress=progress))
    unlabelled = list_items(root, "unlabelled")
    if not splits and not unlabelled:
        raise DataError(f"no AI4Mars frames or labels under {root}")
    return {
        "root": str(root),
        "splits": splits,
        "unlabelled_images": {
            m: sum(i.mission == m for i in unlabelled) for m in sorted({i.mission for i in unlabelled})
        },
    }


def format_stats(stats: dict) -> str:
    """A plain-text table: one row per split, percent of labelled pixels per class."""
    head = (
        f"{'split':<14} {'mission':<7} {'images':>7} "
        + " ".join(f"{n[:9]:>9}" for n in CLASS_NAMES)
        + "  labelled"
    )
    lines = [head, "-" * len(head)]
    for split, s in stats["splits"].items():
        cells = " ".join(f"{s['percent'][n]:8.2f}%" for n in CLASS_NAMES)
        lines.append(
            f"{split:<14} {str(s['mission']):<7} {s['images']:>7} {cells}  {s['labelled_percent']:6.1f}%"
        )
    for mission, n in stats["unlabelled_images"].items():
        lines.append(f"{'unlabelled':<14} {mission:<7} {n:>7}")
    return "\n".join(lines)


def plot_composition(stats: dict, path: str | Path, title: str = "") -> Path:
    """Grouped bar chart: percent of labelled pixels per class, one bar group per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(stats["splits"])
    if not splits:
        raise DataError(f"no labelled splits to plot under {stats['root']}")
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(splits)
    x = np.arange(NUM_CLASSES)
    for k, split in enumerate(splits):
        values = [stats["splits"][split]["percent"][n] for n in CLASS_NAMES]
        ax.bar(
            x + (k - (len(splits) - 1) / 2) * width,
            values,
            width,
            label=f"{split} ({stats['splits'][split]['images']})",
        )
    ax.set_xticks(x, CLASS_NAMES)
    ax.set_ylabel("% of labelled pixels")
    ax.set_title(title or f"class composition: {Path(stats['root']).name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
