"""Terrain hazards in the near-field traverse corridor: the facts a rover driver acts on.

The corridor is the trapezoid of ground the rover is about to drive over, as it appears in a
forward-looking NAVCAM frame: wide at the bottom edge (close to the wheels), narrowing towards the
horizon. Its corners are fractions of the frame size, so one config serves every resolution:

        top_width * W
       +-------------+            y = top * H
      /               \\
     /                 \\
    +-------------------+          y = bottom * H
        bottom_width * W           (both centred on `centre * W`)

Inside it we measure the share of terrain pixels (soil, bedrock, sand, big rock; rover body and
far background are not ground) that are big rock (obstacle) and sand (embedding risk, the Spirit
lesson), and flag each one that exceeds its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from marsedge.config import from_dict
from marsedge.errors import ConfigError

TERRAIN_NAMES = ("soil", "bedrock", "sand", "big rock")


@dataclass(frozen=True)
class HazardConfig:
    top: float = 0.55  # corridor far edge, fraction of frame height from the top
    bottom: float = 1.0  # corridor near edge
    top_width: float = 0.30  # corridor width at its far edge, fraction of frame width
    bottom_width: float = 0.70  # corridor width at its near edge
    centre: float = 0.5  # corridor centre line, fraction of frame width
    max_big_rock: float = 0.05  # flag when big rock covers more of the corridor's terrain than this
    max_sand: float = 0.25  # flag when sand covers more than this

    def __post_init__(self) -> None:
        for key in ("top", "bottom", "top_width", "bottom_width", "centre", "max_big_rock", "max_sand"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"hazards.{key} must lie in [0, 1], got {value}")
        if self.top >= self.bottom:
            raise ConfigError(f"hazards.top ({self.top}) must be above hazards.bottom ({self.bottom})")


def load_hazard_config(path: str | Path | None) -> HazardConfig:
    """The corridor and thresholds from YAML (keys of HazardConfig), defaults when path is None."""
    if path is None:
        return HazardConfig()
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"hazard config {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    return from_dict(HazardConfig, data.get("hazards", data), prefix="hazards")


@lru_cache(maxsize=8)
def corridor_mask(height: int, width: int, cfg: HazardConfig) -> np.ndarray:
    """Boolean HxW mask of the corridor trapezoid (cached: every frame of a run has one size)."""
    cx = cfg.centre * width
    y0, y1 = cfg.top * height, cfg.bottom * height
    polygon = np.array([
        [cx - cfg.top_width * width / 2, y0], [cx + cfg.top_width * width / 2, y0],
        [cx + cfg.bottom_width * width / 2, y1], [cx - cfg.bottom_width * width / 2, y1],
    ])
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon - 0.5).astype(np.int32)], 1)
    corridor = mask.astype(bool)
    corridor.setflags(write=False)  # shared by every caller through the cache
    return corridor


def assess(mask: np.ndarray, class_table: list[dict], cfg: HazardConfig) -> dict:
    """Big-rock and sand fractions of the corridor's terrain pixels, and the flags they raise."""
    ids = {c["name"]: int(c["id"]) for c in class_table}
    corridor = corridor_mask(mask.shape[0], mask.shape[1], cfg)
    inside = mask[corridor]
    counts = np.bincount(inside, minlength=256)
    terrain = int(sum(counts[ids[n]] for n in TERRAIN_NAMES if n in ids))

    def share(name: str) -> float:
        return float(counts[ids[name]] / terrain) if name in ids and terrain else 0.0

    big_rock, sand = share("big rock"), share("sand")
    flags = [name for name, value, limit in (("big_rock", big_rock, cfg.max_big_rock),
                                             ("sand", sand, cfg.max_sand)) if value > limit]
    return {
        "corridor_terrain_pixels": terrain,
        "big_rock": round(big_rock, 5),
        "sand": round(sand, 5),
        "flags": flags,
        "hazard": bool(flags),
    }


def class_fractions(mask: np.ndarray, class_table: list[dict]) -> dict[str, float]:
    """Share of the whole frame taken by each class, by name."""
    counts = np.bincount(mask.reshape(-1), minlength=256)
    total = max(int(mask.size), 1)
    return {c["name"]: round(float(counts[int(c["id"])] / total), 5) for c in class_table}
