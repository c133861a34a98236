"""The terrain class table: ids, names and colours, and the AI4Mars encoding.

AI4Mars labels are 0 soil, 1 bedrock, 2 sand, 3 big rock, 255 unlabelled; the MSL rover and
range (>30 m) masks are folded in as classes 4 and 5. M2020 frames never carry 4 or 5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class TerrainClass:
    id: int
    name: str
    colour: tuple[int, int, int]  # RGB, for overlays and plots


CLASSES: tuple[TerrainClass, ...] = (
    TerrainClass(0, "soil", (204, 153, 102)),
    TerrainClass(1, "bedrock", (120, 120, 200)),
    TerrainClass(2, "sand", (240, 220, 80)),
    TerrainClass(3, "big rock", (220, 40, 40)),
    TerrainClass(4, "rover", (60, 200, 60)),
    TerrainClass(5, "background", (40, 40, 40)),
)
NUM_CLASSES = len(CLASSES)
NUM_TERRAIN_CLASSES = 4  # the 4-class mode: masks become ignore instead of classes 4/5
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
SOIL, BEDROCK, SAND, BIG_ROCK, ROVER, BACKGROUND = range(NUM_CLASSES)


def class_table(num_classes: int = NUM_CLASSES) -> list[dict]:
    """The class table as plain data, for checkpoints, ONNX metadata and reports."""
    return [{"id": c.id, "name": c.name, "colour": list(c.colour)} for c in CLASSES[:num_classes]]


def named_class_table(names: list[str]) -> list[dict]:
    """A class table for any list of class names (an image classifier's 19 MSL surface classes):
    ids in order, colours at evenly spaced hues so that neighbouring ids differ."""
    import colorsys

    table = []
    for i, name in enumerate(names):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.9)  # golden-ratio hue steps
        table.append({"id": i, "name": name, "colour": [round(255 * r), round(255 * g), round(255 * b)]})
    return table


def palette(table: list[dict] | None = None) -> np.ndarray:
    """A 256x3 uint8 RGB lookup table: class id -> colour, ignore (and unknown ids) -> black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for entry in table or class_table():
        lut[int(entry["id"])] = entry["colour"]
    return lut


def colorize(mask: np.ndarray, table: list[dict] | None = None) -> np.ndarray:
    """HxW class ids -> HxWx3 RGB image."""
    return palette(table)[mask]
