"""The AI4Mars release layout: list frames and labels by name, read them lazily as `Sample`s.

    ai4mars-dataset-merged-0.1/          (later releases nest MSL under msl/ncam/ and add m2020/)
      msl/images/edr/      <stem>.JPG             1024x1024 greyscale NAVCAM frame
      msl/images/mxy/      <stem EDR->MXY>.png    rover mask, non-zero = rover (may be absent)
      msl/images/rng-30m/  <stem EDR->RNG>.png    range mask, non-zero = beyond 30 m (may be absent)
      msl/labels/train/    <stem>.png             crowd-merged label, 0..3, 255 = unlabelled
      msl/labels/test/masked-gold-min{1,2,3}-100agree/<stem>_merged.png   expert gold sets
      mer/images/eff/      <stem>.JPG             MER (Spirit/Opportunity) NAVCAM train frames
      mer/labels/train/merged-unmasked/<stem>_merged*.png                 MER crowd labels (mer-train)
      mer/images/test/     <name>.JPG             MER expert test frames
      mer/labels/test/masked-gold-min{2,3}-100agree/<label>.png          mer-test-min2/-min3; a label's
                           stem is not its image's name: masked-gold-min3-100agree/test.csv pairs them
                           (rows: label stem, image file name); `mer-test` is min3 (else min2, else
                           the older masked-gold-min1-100agree folder)
      m2020/images/ncam/   <stem>.png|jpg|jpeg|JPG  colour 1280x960, no rover or range masks
      m2020/labels/NAV/    <stem>_merged<N>.png   crowd-merged label (m2020-train)
      m2020/images/test/ + m2020/labels/test/<stem>_merged.png   m2020-test: the expert set (greyscale,
                           dense) the multi-mission paper scores on; not public, the synthetic tree
                           writes one; another folder with `list_items(..., label_dir=)`
      label_keys.json      label value -> terrain name; checked against the class table

A label's image is its name minus `_merged...` with the image's extension; `EDR` -> `MXY` / `RNG`
names its masks. Masks overwrite the label: rover -> class 4, range -> class 5 (range wins), or
255 in the 4-class mode. Listing only reads folder entries, never a file: 16k frames list in well
under a second, and each `Sample` is read when indexed.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from marsedge.data.frames import read_frame
from marsedge.data.readers import read_index_raster
from marsedge.errors import DataError
from marsedge.terrain import BACKGROUND, CLASS_NAMES, IGNORE_INDEX, NUM_TERRAIN_CLASSES, ROVER

MSL_EDR = "images/edr"
MSL_MXY = "images/mxy"
MSL_RNG = "images/rng-30m"
MSL_TRAIN = "labels/train"
MSL_CROWD = "labels/crowd"  # synthetic release only: <stem>/<labeler>.png, the input of merging
GOLD_DIRS = {f"gold-min{k}": f"labels/test/masked-gold-min{k}-100agree" for k in (1, 2, 3)}
M2020_IMAGES = "m2020/images/ncam"
M2020_TRAIN = "m2020/labels/NAV"
M2020_CROWD = "m2020/labels/crowd"
M2020_TEST = "m2020/labels/test"
M2020_TEST_IMAGES = "m2020/images/test"
MER_IMAGES = "mer/images"
MER_TRAIN_IMAGES = "mer/images/eff"
MER_TEST_IMAGES = "mer/images/test"
MER_TRAIN = "mer/labels/train/merged-unmasked"
MER_TEST = "mer/labels/test"
MER_GOLD = {f"mer-test-min{k}": f"{MER_TEST}/masked-gold-min{k}-100agree" for k in (2, 3)}
MER_PAIRING = "test.csv"
LABEL_KEYS = "label_keys.json"

IMAGE_SUFFIXES = (".JPG", ".jpg", ".jpeg", ".JPEG", ".png", ".PNG")
_IMAGE_EXTS = frozenset(s.lower() for s in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class SplitLayout:
    """Where a labelled split lives: folders relative to the dataset root (MSL ones to `msl_root`)."""

    mission: str
    labels: str
    images: str
    msl: bool = False  # under msl/ (0.1) or msl/ncam/ (0.6), with rover and range masks
    recursive: bool = False  # images searched in subfolders too
    pairing: str | None = None  # CSV (label stem, image file name) in the label folder


LAYOUTS: dict[str, SplitLayout] = {
    "train": SplitLayout("msl", MSL_TRAIN, MSL_EDR, msl=True),
    **{split: SplitLayout("msl", folder, MSL_EDR, msl=True) for split, folder in GOLD_DIRS.items()},
    "mer-train": SplitLayout("mer", MER_TRAIN, MER_IMAGES, recursive=True),
    **{
        split: SplitLayout("mer", MER_GOLD[gold], MER_IMAGES, recursive=True, pairing=MER_PAIRING)
        for split, gold in (("mer-test", "mer-test-min3"), *((s, s) for s in MER_GOLD))
    },
    "m2020-train": SplitLayout("m2020", M2020_TRAIN, M2020_IMAGES),
    "m2020-test": SplitLayout("m2020", M2020_TEST, "m2020/images", recursive=True),
}
# `val` and `train-val`: the MSL train labels split as train.py splits them with its defaults
# (data.val_fraction, seed 0; marsedge.data.sampling.validation_split, grouped by spacecraft clock),
# so the quantize gate and recipe choice tune on the training run's val and calibrate on the rest
VAL_FRACTION = 0.1
VAL_SEED = 0
CARVED = {"val": ("train", 1), "train-val": ("train", 0)}  # split -> (source split, side of the split)
TEST_SPLITS = tuple(s for s in LAYOUTS if s.startswith("gold-") or "test" in s)  # scored once, never tuned on
SPLITS = (*LAYOUTS, *CARVED, "unlabelled")
_MERGED = re.compile(r"_merged[-_]?\d*$")
_LABEL_VALUES = np.zeros(256, dtype=bool)
_LABEL_VALUES[[*range(NUM_TERRAIN_CLASSES), IGNORE_INDEX]] = True


@dataclass
class Sample:
    image: np.ndarray  # uint8 HxW (greyscale missions) or HxWx3 RGB (M2020)
    label: np.ndarray | None  # uint8 HxW class ids (rover 4, range 5), 255 ignore; None if unlabelled
    mission: str  # "msl", "m2020", "mer"
    name: str


@dataclass(frozen=True)
class Item:
    """Where one sample lives on disk. Nothing is read until `load_sample`."""

    image: Path
    label: Path | None
    rover_mask: Path | None
    range_mask: Path | None
    mission: str
    name: str


def image_stem(label_path: str | Path) -> str:
    """`X_merged.png` / `X_merged3.png` / `X.png` / `X` -> `X` (string work: called 16k times)."""
    name = os.path.basename(str(label_path))
    stem, suffix = os.path.splitext(name)
    return _MERGED.sub("", stem if suffix.lower() in _IMAGE_EXTS else name)


def mask_stem(stem: str, kind: str) -> str:
    """`NLA_..EDR_..` -> `NLA_..MXY_..` (kind "MXY") or `NLA_..RNG_..` (kind "RNG")."""
    return stem.replace("EDR", kind, 1)


def msl_root(root: str | Path) -> Path:
    """`root/msl/ncam` in later releases, `root/msl` in the merged release 0.1."""
    root = Path(root)
    return root / "msl" / "ncam" if (root / "msl" / "ncam" / "images").is_dir() else root / "msl"


def _index(
    folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES, recursive: bool = False
) -> dict[str, str]:
    """stem -> path (a str: 16k Path objects would cost more than the listing) of a folder's files.

    Names only; nothing is opened.
    """
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    stack = [str(folder)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if recursive and entry.is_dir():
                    stack.append(entry.path)
                elif entry.name.endswith(suffixes) and not entry.name.startswith("."):
                    found.setdefault(entry.name.rsplit(".", 1)[0], entry.path)
    return dict(sorted(found.items()))


def _path(path: str | None) -> Path | None:
    return None if path is None else Path(path)


def _pairing(label_dir: Path, name: str | None) -> dict[str, str]:
    """label stem -> image file name from a pairing CSV (the folder's own, else MER min3's)."""
    if name is None:
        return {}
    for folder in (label_dir, label_dir.parent / Path(MER_GOLD["mer-test-min3"]).name):
        path = folder / name
        if path.is_file():
            try:
                with open(path, newline="", encoding="utf-8") as f:
                    rows = [r for r in csv.reader(f) if len(r) >= 2]
            except (UnicodeDecodeError, csv.Error) as exc:
                raise DataError(f"{path}: not a UTF-8 CSV of label and image names ({exc})") from None
            images = [(r[0].strip(), r[1].strip()) for r in rows]
            return {image_stem(s): name for s, name in images if name.lower().endswith(tuple(_IMAGE_EXTS))}
    return {}


def _labelled_items(
    label_dir: Path, image_dir: Path, mission: str, masks_root: Path | None, recursive: bool = False,
    pairing: str | None = None,
) -> list[Item]:
    if not label_dir.is_dir():
        raise DataError(f"label folder not found: {label_dir}")
    images = _index(image_dir, recursive=recursive)
    by_file = {os.path.basename(p): p for p in images.values()}
    pairs = _pairing(label_dir, pairing)
    rover = _index(masks_root / MSL_MXY, (".png",)) if masks_root else {}
    far = _index(masks_root / MSL_RNG, (".png",)) if masks_root else {}
    labels = {s: p for s, p in _index(label_dir, (".png",)).items() if not s.startswith(".")}
    if not labels:
        raise DataError(f"label folder {label_dir} holds no label PNGs")
    items = []
    for label_stem, label_path in labels.items():
        stem = image_stem(label_stem)
        image = by_file.get(pairs.get(stem, "")) or images.get(stem)
        if image is None:
            raise DataError(
                f"label {label_path} in {label_dir} has no image: looked for {image_dir / stem}.(JPG|png)"
                + (f" and {pairing}" if pairs else "")
            )
        stem = image_stem(image)
        rover_mask, range_mask = rover.get(mask_stem(stem, "MXY")), far.get(mask_stem(stem, "RNG"))
        items.append(
            Item(Path(image), Path(label_path), _path(rover_mask), _path(range_mask), mission, stem)
        )
    return items


def _layout(root: Path, split: str) -> SplitLayout:
    if split not in LAYOUTS:
        raise DataError(f"split '{split}' has no label folder (labelled splits: {', '.join(LAYOUTS)})")
    layout = LAYOUTS[split]
    if split == "mer-test":  # min3, else min2, else the older min1 folder
        older = f"{MER_TEST}/masked-gold-min1-100agree"
        for folder in (MER_GOLD["mer-test-min3"], MER_GOLD["mer-test-min2"], older):
            if (root / folder).is_dir():
                return replace(layout, labels=folder)
    return layout


def label_folder(root: str | Path, split: str) -> Path:
    """The folder holding a labelled split's label PNGs."""
    root = Path(root)
    layout = _layout(root, split)
    return (msl_root(root) if layout.msl else root) / layout.labels


def available_splits(root: str | Path) -> list[str]:
    """The labelled splits whose label folder exists under root (`mer-test` only when it is not
    another name for mer-test-min3 or -min2)."""
    found = [s for s in LAYOUTS if label_folder(root, s).is_dir()]
    aliased = "mer-test-min2" in found or "mer-test-min3" in found
    return [s for s in found if not (aliased and s == "mer-test")]


def check_label_keys(root: str | Path) -> None:
    """`label_keys.json` at the root (label value -> terrain name, either way round) must name the
    class table's terrain classes; a mismatch is a DataError naming both. Absent: nothing to check."""
    path = Path(root) / LABEL_KEYS
    if not path.is_file():
        return
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(keys, dict):
        raise DataError(f"{path} must map label values to terrain names")
    for a, b in keys.items():
        value, name = (a, b) if str(a).strip().isdigit() else (b, a)
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise DataError(f"{path}: entry {a!r}: {b!r} has no integer label value") from None
        if value >= NUM_TERRAIN_CLASSES:
            continue  # 255 (null / no label)
        if str(name).strip().lower().replace("_", " ") != CLASS_NAMES[value]:
            raise DataError(
                f"{path} maps label {value} to '{name}', the class table has '{CLASS_NAMES[value]}'"
            )


def list_items(root: str | Path, split: str, label_dir: str | Path | None = None) -> list[Item]:
    """The items of one split of an AI4Mars tree (see `SPLITS`), sorted by name.

    `label_dir` (relative to root, or absolute) reads the split's labels from another folder, e.g.
    an M2020 expert test set kept elsewhere.
    """
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (valid: {', '.join(SPLITS)})")
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    check_label_keys(root)
    if split == "unlabelled":
        return _unlabelled_items(root)
    if split in CARVED:
        from marsedge.data.sampling import validation_split

        source, side = CARVED[split]
        return validation_split(list_items(root, source, label_dir), VAL_FRACTION, VAL_SEED)[side]
    layout = _layout(root, split)
    base = msl_root(root) if layout.msl else root
    folder = root / label_dir if label_dir is not None else base / layout.labels
    masks = base if layout.msl else None
    images = base / layout.images
    return _labelled_items(folder, images, layout.mission, masks, layout.recursive, layout.pairing)


def _unlabelled_items(root: Path) -> list[Item]:
    """Frames that no label names: MSL EDRs outside train and gold, M2020 frames outside NAV."""
    msl = msl_root(root)
    named = {image_stem(p) for d in (MSL_TRAIN, *GOLD_DIRS.values()) for p in _index(msl / d, (".png",))}
    rover, far = _index(msl / MSL_MXY, (".png",)), _index(msl / MSL_RNG, (".png",))
    items = [
        Item(
            Path(path),
            None,
            _path(rover.get(mask_stem(stem, "MXY"))),
            _path(far.get(mask_stem(stem, "RNG"))),
            "msl",
            stem,
        )
        for stem, path in _index(msl / MSL_EDR).items()
        if stem not in named
    ]
    named = {image_stem(p) for p in _index(root / M2020_TRAIN, (".png",))}
    items += [
        Item(Path(path), None, None, None, "m2020", stem)
        for stem, path in _index(root / M2020_IMAGES).items()
        if stem not in named
    ]
    return items


def _read_mask(path: Path | None, label: Path, shape: tuple[int, int]) -> np.ndarray | None:
    if path is None:
        return None
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError(f"cannot read mask {path}")
    mask = mask[..., 0] if mask.ndim == 3 else mask
    if mask.shape != shape:
        raise DataError(f"label {label} is {shape[1]}x{shape[0]}, its mask {path} is "
                        f"{mask.shape[1]}x{mask.shape[0]}")
    return mask != 0


def read_label(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """An AI4Mars label PNG: values 0..3 and 255 (grey, grey saved as RGB, or a palette PNG's
    indices; colour-coded labels are refused), the size of its image (`shape`) when given."""
    label, indexed = read_index_raster(Path(path))
    if label.dtype != np.uint8:
        raise DataError(f"label {path} is {label.dtype}; AI4Mars labels are 8-bit")
    if shape is not None and label.shape != shape:
        raise DataError(
            f"label {path} is {label.shape[1]}x{label.shape[0]}, its image is {shape[1]}x{shape[0]}"
        )
    if not _LABEL_VALUES[label].all():
        bad = int(label[~_LABEL_VALUES[label]][0])
        what = "palette index" if indexed else "value"
        raise DataError(f"label {path} has {what} {bad}; AI4Mars labels use 0..3 and 255")
    return label


def load_label(item: Item, shape: tuple[int, int] | None = None, four_class: bool = False) -> np.ndarray:
    """An item's label with its masks folded in: rover -> 4, range -> 5 (range wins where both
    apply), or both -> 255 in the 4-class mode. `shape` (the image's) is checked when given."""
    if item.label is None:
        raise DataError(f"{item.image} has no label")
    label = read_label(item.label, shape)
    shape = label.shape
    rover = _read_mask(item.rover_mask, item.label, shape)
    far = _read_mask(item.range_mask, item.label, shape)
    if rover is not None:
        label[rover] = IGNORE_INDEX if four_class else ROVER
    if far is not None:
        label[far] = IGNORE_INDEX if four_class else BACKGROUND
    return label


def load_sample(item: Item, four_class: bool = False) -> Sample:
    """Read one item: the frame and, if it has one, its label with the masks folded in."""
    image = read_frame(item.image)
    label = None if item.label is None else load_label(item, image.shape[:2], four_class)
    return Sample(image=image, label=label, mission=item.mission, name=item.name)


class AI4MarsDataset:
    """One split of an AI4Mars tree: `len()`, `[i] -> Sample` (read on access), `.items` (paths)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        four_class: bool = False,
        items: list[Item] | None = None,
        label_dir: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.four_class = four_class
        self.items = list_items(root, split, label_dir) if items is None else list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        return load_sample(self.items[index], self.four_class)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"AI4MarsDataset({str(self.root)!r}, split={self.split!r}, {len(self)} items)"
