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

The classes are the model's: `HazardRules.for_model(cfg, class_table)` looks each rule's class up
by name in the model's own class table (its metadata), once per run. A 4-class terrain model and
the 6-class model both have every rule's class. A rule whose class the model lacks (a model trained
on another table) cannot be judged: with `missing_class: skip` (the default) it is skipped, edge-run
says so once at the start and in summary.json (`hazards.skipped`), and its value in frames.jsonl is
null; with `missing_class: error` the run is refused before any frame (a ConfigError naming the
rule's threshold key and the model's classes), for a config that insists on every rule.

A corridor that holds no terrain pixel (all rover body, background, or pixels below
`--min-confidence`) is not "clear": the frame reads `hazard: true`, `flags:
["no_terrain_in_corridor"]`, every share null (unknown ground is a hazard until seen).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from marsedge.config import from_dict, read_yaml
from marsedge.errors import ConfigError

TERRAIN_NAMES = ("soil", "bedrock", "sand", "big rock")
MISSING_CLASS = ("skip", "error")  # what a rule naming a class the model lacks does
NO_TERRAIN = "no_terrain_in_corridor"  # the flag of a corridor that holds no terrain pixel


@dataclass(frozen=True)
class HazardRule:
    """One flag: the share of the corridor's terrain taken by `class_name`, above the threshold
    HazardConfig.`limit_key`."""

    class_name: str
    limit_key: str


# flag name (frames.jsonl key) -> rule; a new hazard is one entry here and one HazardConfig field
HAZARD_RULES: dict[str, HazardRule] = {
    "big_rock": HazardRule("big rock", "max_big_rock"),
    "sand": HazardRule("sand", "max_sand"),
}


@dataclass(frozen=True)
class HazardConfig:
    top: float = 0.55  # corridor far edge, fraction of frame height from the top
    bottom: float = 1.0  # corridor near edge
    top_width: float = 0.30  # corridor width at its far edge, fraction of frame width
    bottom_width: float = 0.70  # corridor width at its near edge
    centre: float = 0.5  # corridor centre line, fraction of frame width
    max_big_rock: float = 0.05  # flag when big rock covers more of the corridor's terrain than this
    max_sand: float = 0.25  # flag when sand covers more than this
    missing_class: str = "skip"  # a rule whose class the model lacks: "skip" (noted once) or "error"

    def __post_init__(self) -> None:
        for key in ("top", "bottom", "top_width", "bottom_width", "centre",
                    *(r.limit_key for r in HAZARD_RULES.values())):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"hazards.{key} must lie in [0, 1], got {value}")
        if self.missing_class not in MISSING_CLASS:
            raise ConfigError(f"hazards.missing_class must be one of {', '.join(MISSING_CLASS)}, "
                              f"got {self.missing_class!r}")
        if self.top >= self.bottom:
            raise ConfigError(f"hazards.top ({self.top}) must be above hazards.bottom ({self.bottom})")
        for key in ("top_width", "bottom_width"):  # a corridor of no width holds no terrain: never a hazard
            if getattr(self, key) <= 0:
                raise ConfigError(f"hazards.{key} must be more than 0 (a corridor needs a width), "
                                  f"got {getattr(self, key)}")


def load_hazard_config(path: str | Path | None) -> HazardConfig:
    """The corridor and thresholds from YAML (keys of HazardConfig), defaults when path is None."""
    if path is None:
        return HazardConfig()
    data = read_yaml(path)  # missing file, bad YAML: one ConfigError naming the file
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
    if not mask.any():  # (not cached: each frame of this size fails alike, never "no hazard")
        raise ValueError(f"the hazard corridor covers no pixel of a {width}x{height} frame")
    corridor = mask.astype(bool)
    corridor.setflags(write=False)  # shared by every caller through the cache
    return corridor


@dataclass(frozen=True)
class HazardRules:
    """The hazard rules one model can judge, resolved against its class table once per run."""

    config: HazardConfig
    terrain_ids: tuple[int, ...]  # the model's ground classes: the denominator of every share
    rules: dict[str, tuple[int, float]]  # flag -> (class id, threshold)
    skipped: dict[str, str] = field(default_factory=dict)  # flag -> the class the model lacks

    @classmethod
    def for_model(cls, config: HazardConfig, class_table: list[dict]) -> HazardRules:
        """Look every rule's class up in the model's table; a missing one is skipped or, with
        `missing_class: error`, a ConfigError naming the rule's key and the model's classes."""
        ids = {str(c["name"]): int(c["id"]) for c in class_table}
        rules, skipped = {}, {}
        for flag, rule in HAZARD_RULES.items():
            if rule.class_name in ids:
                rules[flag] = (ids[rule.class_name], float(getattr(config, rule.limit_key)))
                continue
            if config.missing_class == "error":
                raise ConfigError(f"hazards.{rule.limit_key}: the model has no class '{rule.class_name}' "
                                  f"(its classes: {', '.join(ids)}); set hazards.missing_class: skip "
                                  "to run without this rule")
            skipped[flag] = rule.class_name
        terrain = tuple(ids[n] for n in TERRAIN_NAMES if n in ids)
        return cls(config, terrain, rules, skipped)

    def notes(self) -> list[str]:
        """One line per skipped rule, and one for a model that knows no ground, for the start of a run."""
        lines = [f"hazard rule {flag} skipped: the model has no class '{name}' "
                 "(hazards.missing_class: error refuses such a model)" for flag, name in self.skipped.items()]
        if not self.terrain_ids:
            lines.append(f"the model has none of the terrain classes ({', '.join(TERRAIN_NAMES)}): every "
                         f"frame will read hazard: true, flag {NO_TERRAIN}")
        return lines

    def describe(self) -> dict:
        """The rules in force and those skipped (summary.json)."""
        return {"rules": {flag: {"class": HAZARD_RULES[flag].class_name, "limit": limit}
                          for flag, (_, limit) in self.rules.items()},
                "skipped": dict(self.skipped)}

    def assess(self, mask: np.ndarray) -> dict:
        """Each rule's share of the corridor's terrain pixels (None when skipped) and its flag."""
        corridor = corridor_mask(mask.shape[0], mask.shape[1], self.config)
        counts = class_counts(mask, corridor.view(np.uint8))  # bool as 0/1 bytes: no copy
        terrain = int(sum(counts[i] for i in self.terrain_ids))
        if not terrain:
            # No ground seen ahead (rover body, sky, unsure pixels): no share can be measured, and
            # an unseen corridor is not a clear one. It reads `hazard: true`, the fail-safe a planner
            # expects of unknown terrain (one that reads only `hazard` stops; null would read as
            # clear to `if hazard:`), and the flag says why, so a driver tells it from an obstacle.
            return {"corridor_terrain_pixels": 0, **{flag: None for flag in HAZARD_RULES},
                    "flags": [NO_TERRAIN], "hazard": True}
        shares = {flag: float(counts[class_id] / terrain) for flag, (class_id, _) in self.rules.items()}
        flags = [flag for flag, (_, limit) in self.rules.items() if shares[flag] > limit]
        return {"corridor_terrain_pixels": terrain,
                **{flag: round(shares[flag], 5) if flag in shares else None for flag in HAZARD_RULES},
                "flags": flags, "hazard": bool(flags)}


def class_fractions(mask: np.ndarray, class_table: list[dict]) -> dict[str, float]:
    """Share of the whole frame taken by each class, by name."""
    counts = class_counts(mask)
    total = max(int(mask.size), 1)
    return {c["name"]: round(float(counts[int(c["id"])] / total), 5) for c in class_table}


def class_counts(mask: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Pixels per class id (256 counts) of a uint8 mask, only where `where` (uint8, nonzero) if
    given: OpenCV's histogram (0.2 ms at 512 px; np.bincount casts to int64 first, 0.5 ms), exact
    while the counts fit float32's integers; np.bincount beyond that or for another dtype."""
    if mask.dtype != np.uint8 or mask.size >= 1 << 24:
        selected = mask.reshape(-1) if where is None else mask[where.astype(bool)]
        return np.bincount(selected, minlength=256)
    hist = cv2.calcHist([np.ascontiguousarray(mask)], [0], where, [256], [0, 256])
    return hist.reshape(-1).astype(np.int64)
