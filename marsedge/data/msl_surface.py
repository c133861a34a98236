"""The MSL surface classification dataset (Wagstaff et al.) in its published layout (torch-free).

Release v2.1 (Zenodo 4033453, 19 classes; what the homogeneous-Mars paper benchmarks on):

    msl-labeled-data-set-v2.1/
      images/<file name>.jpg          Mastcam / MAHLI / NAVCAM image, one class per image
      class_map.csv                   `<class id>,<class name>` per line (ids 0..K-1)
      train-set-v2.1.txt              `<file name> <class id>` per line
      val-set-v2.1.txt                  splits are chronological by sol: train sols first,
      test-set-v2.1.txt                 then val, then test (the papers' train-test gap)

The earlier release (24 classes, the semi-supervised paper's table 1) names its class map
`msl_synset_words-indexed.txt` (`<class id> <class name>`, whitespace-separated) and its splits
`{train,val,test}-calibrated-shuffled.txt`, with file names relative to the release folder. The
reader therefore never assumes a class count: it reads the class map. File names start with the
sol (`0003ML0000000110100031E01_DRCL.JPG` is sol 3), which `sol_of` reads.

Errors are DataErrors naming the file and line: a malformed line, an unknown class id, a missing
image, a missing split or class map file.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsedge.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Release:
    """Where one release keeps its images, class map and split lists (relative to its folder)."""

    folder: str  # the release folder's published name
    images: str  # image folder; a name with a '/' in a split file is relative to the release folder
    class_map: str
    splits: dict[str, str]


RELEASES: dict[str, Release] = {
    "v2.1": Release(
        "msl-labeled-data-set-v2.1", "images", "class_map.csv", {s: f"{s}-set-v2.1.txt" for s in SPLITS}
    ),
    "v1": Release(
        "msl-images", ".", "msl_synset_words-indexed.txt", {s: f"{s}-calibrated-shuffled.txt" for s in SPLITS}
    ),
}


@dataclass(frozen=True)
class ClassItem:
    """One labelled image: where it is, its class id, its file name and its sol (None: unknown)."""

    path: Path
    target: int
    name: str
    sol: int | None


def sol_of(name: str) -> int | None:
    """The sol an MSL image was taken on: the file name's first four digits (None if it has none)."""
    match = re.match(r"(\d{4})", Path(name).name)
    return int(match.group(1)) if match else None


def find_release(root: str | Path) -> tuple[Path, Release]:
    """The release folder under (or at) `root` and which release it is, by its class map file."""
    root = Path(root)
    for release in RELEASES.values():
        for folder in (root, root / release.folder):
            if (folder / release.class_map).is_file():
                return folder, release
    names = ", ".join(f"{r.folder}/{r.class_map}" for r in RELEASES.values())
    raise DataError(f"{root}: not an MSL surface dataset (no {names})")


def read_class_map(path: str | Path) -> list[str]:
    """Class names by id from `id,name` (v2.1 CSV) or `id name` (earlier release) lines."""
    path = Path(path)
    names: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(",", 1) if "," in line else line.strip().split(None, 1)
        if len(parts) != 2 or not parts[0].strip().isdigit() or not parts[1].strip():
            raise DataError(f"{path}:{lineno}: expected '<class id>,<class name>', got {line.strip()!r}")
        cid = int(parts[0])
        if cid in names:
            raise DataError(f"{path}:{lineno}: class id {cid} listed twice")
        names[cid] = parts[1].strip()
    if not names:
        raise DataError(f"{path}: no classes")
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names) + 1)) - set(names))
        raise DataError(f"{path}: class ids must be 0..{len(names) - 1}; missing {missing}")
    return [names[i] for i in range(len(names))]


def read_split(path: str | Path, folder: Path, images: str, num_classes: int) -> list[ClassItem]:
    """The `<file name> <class id>` lines of one split file; every image must exist."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{lineno}: expected '<file name> <class id>', got {line.strip()!r}")
        name, target = parts[0], int(parts[1])
        if not 0 <= target < num_classes:
            raise DataError(
                f"{path}:{lineno}: class id {target} outside the class map's 0..{num_classes - 1}"
            )
        image = folder / name if "/" in name else folder / images / name
        if not image.is_file():
            raise DataError(f"{path}:{lineno}: image {image} not found")
        items.append(ClassItem(image, target, Path(name).name, sol_of(name)))
    return items


class MSLSurfaceDataset:
    """One split of the MSL surface dataset: `.items` (ClassItem), `.classes` (names by id),
    `len()`, `[i] -> (uint8 image HxW or HxWx3, class id)` read lazily."""

    def __init__(self, root: str | Path, split: str) -> None:
        if split not in SPLITS:
            raise DataError(f"unknown MSL surface split {split!r} (valid: {', '.join(SPLITS)})")
        self.folder, self.release = find_release(root)
        self.classes = read_class_map(self.folder / self.release.class_map)
        self.split = split
        self.items = read_split(
            self.folder / self.release.splits[split], self.folder, self.release.images, len(self.classes)
        )

    @property
    def targets(self) -> list[int]:
        return [item.target for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        from marsedge.data.frames import read_frame

        item = self.items[index]
        return read_frame(item.path), item.target

    def class_counts(self) -> list[int]:
        counts = Counter(self.targets)
        return [counts.get(c, 0) for c in range(len(self.classes))]

    def sol_range(self) -> tuple[int, int] | None:
        sols = [item.sol for item in self.items if item.sol is not None]
        return (min(sols), max(sols)) if sols else None


def describe(root: str | Path) -> dict:
    """Per split: images, sol range and images per class name (what `synth-classes` prints)."""
    out: dict = {}
    for split in SPLITS:
        ds = MSLSurfaceDataset(root, split)
        out[split] = {
            "images": len(ds),
            "sols": ds.sol_range(),
            "per_class": dict(zip(ds.classes, ds.class_counts(), strict=True)),
        }
    return out


@dataclass
class ImageSample:
    """One labelled image as the edge scores it: the image, its class id and its name (the file
    stem, as an AI4Mars sample's name is its product id)."""

    image: np.ndarray
    label: int
    name: str


@dataclass(frozen=True)
class ImageItem:
    """Where one labelled image is (`image`) and its name, as `AI4MarsDataset.items` has them."""

    image: Path
    name: str


class LabelledImages:
    """One split as `ImageSample`s, the classification counterpart of `AI4MarsDataset` for
    `marsedge bench` and the quantization gate: `.items` (with `.image`, the path), `.classes`,
    `len()`, `[i]` and iteration, reading lazily."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.data = MSLSurfaceDataset(root, split)
        self.classes = self.data.classes
        self.items = [ImageItem(it.path, Path(it.name).stem) for it in self.data.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ImageSample:
        image, target = self.data[index]
        return ImageSample(image, target, self.items[index].name)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def is_msl_surface(root: str | Path) -> bool:
    """True when `root` holds (or is) an MSL surface release folder."""
    try:
        find_release(root)
    except DataError:
        return False
    return True
