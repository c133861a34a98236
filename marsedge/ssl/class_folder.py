"""An image-classification folder cut from a segmentation set: crops labelled by majority class.

Linear evaluation (the homogeneous-Mars paper, section 4.4) needs image classes; AI4Mars and the
synthetic generator have pixel labels only. This cuts a grid of square crops from each labelled
frame and keeps a crop when at least `min_labelled` of its pixels are labelled and its most common
class holds at least `min_majority` of those; the crop is written under that class's name:

    OUT/train/<class name>/<frame>_<row>_<col>.png     from the `train_split` frames
    OUT/test/<class name>/<frame>_<row>_<col>.png      from the `test_split` frames

    marsedge class-folder --data data/synth --out data/synth_classes --crop 64

torch-free; seeded by nothing (the grid is deterministic), so the same data gives the same folder.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from marsedge.data.ai4mars import AI4MarsDataset
from marsedge.data.frames import list_frames
from marsedge.errors import ConfigError, DataError
from marsedge.io import atomic_write, safe_join, safe_name
from marsedge.terrain import CLASS_NAMES, IGNORE_INDEX


def crop_class(label: np.ndarray, min_labelled: float, min_majority: float) -> int | None:
    """The crop's majority class, or None when too little is labelled or no class dominates."""
    labelled = label[label != IGNORE_INDEX]
    if labelled.size < min_labelled * label.size or labelled.size == 0:
        return None
    counts = np.bincount(labelled, minlength=len(CLASS_NAMES))
    top = int(counts.argmax())
    return top if counts[top] >= min_majority * labelled.size else None


def _write_png(path: Path, image: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), image[..., ::-1] if image.ndim == 3 else image):
            raise OSError(f"cannot write {path}")

    atomic_write(path, write)


def build_class_folder(root: str | Path, out: str | Path, crop: int = 64, train_split: str = "train",
                       test_split: str = "gold-min1", min_labelled: float = 0.5,
                       min_majority: float = 0.6) -> dict[str, dict[str, int]]:
    """Write OUT/{train,test}/<class>/*.png; returns the crop counts per part and class."""
    if crop < 8:
        raise ConfigError(f"--crop must be >= 8 pixels, got {crop}")
    counts: dict[str, dict[str, int]] = {}
    for part, split in (("train", train_split), ("test", test_split)):
        counts[part] = {}
        for sample in AI4MarsDataset(root, split):
            h, w = sample.label.shape
            for r in range(h // crop):
                for c in range(w // crop):
                    window = (slice(r * crop, (r + 1) * crop), slice(c * crop, (c + 1) * crop))
                    cls = crop_class(sample.label[window], min_labelled, min_majority)
                    if cls is None:
                        continue
                    name = safe_name(CLASS_NAMES[cls])
                    folder = Path(out) / part / name
                    folder.mkdir(parents=True, exist_ok=True)
                    _write_png(safe_join(folder, f"{sample.name}_{r}_{c}.png"), sample.image[window])
                    counts[part][name] = counts[part].get(name, 0) + 1
    return counts


def list_class_folder(folder: str | Path,
                      classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, class indices, class names) of a folder with one sub-folder per class.

    With `classes` (the training part's names) indices follow that list: a test part may lack a
    class, but a class the training part never saw is an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"class folder not found: {folder}")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes is None:
        classes = present
        if len(classes) < 2:
            raise DataError(f"{folder}: needs at least two class sub-folders, found {classes}")
    elif unknown := sorted(set(present) - set(classes)):
        raise DataError(f"{folder}: classes {unknown} do not appear in the training part {classes}")
    paths, targets = [], []
    for name in present:
        files = list_frames(folder / name)
        paths += files
        targets += [classes.index(name)] * len(files)
    return paths, targets, classes
