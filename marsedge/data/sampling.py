"""Training-set compositions: label fractions and mixed-domain (MSL + M2020) sets.

Both work on any list of items with a `mission` attribute (`ai4mars.Item`, `Sample`, ...) and are
seeded, so an experiment names its subset by (fraction or cap, seed) and gets the same images on
every machine.

- `label_fraction(items, 0.05, seed)`: 5% of each mission's items, so the M2020:MSL ratio of the
  full set holds in every subset (the 1%..100% experiments of the multi-mission paper). Subsets of
  one seed are nested: the 1% set lies inside the 5% set, which lies inside the 10% set.
- `mixed_domain(items, total=1321, m2020_fraction=0.25, seed)`: a set capped at `total` images of
  which a fraction comes from M2020 and the rest from MSL (the paper's Fig. 2 compositions).
- `validation_split(items, fraction=0.1, seed)`: (train, val) carved per mission from training
  items, grouped so near-duplicate frames of one drive never straddle the split (`clock_group`).
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from marsedge.errors import ConfigError

T = TypeVar("T")


def _mission(item) -> str:
    return str(item.mission)


def _shuffled_by_mission(items: Sequence[T], seed: int) -> dict[str, list[int]]:
    """Indices of each mission's items in a seeded order (each mission its own stream)."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(_mission(item), []).append(i)
    order = {}
    for mission, indices in sorted(groups.items()):
        rng = np.random.default_rng([seed, zlib.crc32(mission.encode())])
        order[mission] = [indices[j] for j in rng.permutation(len(indices))]
    return order


def label_fraction(items: Sequence[T], fraction: float, seed: int = 0) -> list[T]:
    """`fraction` of each mission's items (at least one of each when fraction > 0), in input order."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"label fraction must be in [0, 1], got {fraction}")
    keep: list[int] = []
    for indices in _shuffled_by_mission(items, seed).values():
        count = min(len(indices), max(1, int(round(fraction * len(indices))))) if fraction > 0 else 0
        keep += indices[:count]
    return [items[i] for i in sorted(keep)]


def mixed_domain(
    items: Sequence[T],
    total: int,
    m2020_fraction: float,
    seed: int = 0,
    missions: tuple[str, str] = ("msl", "m2020"),
) -> list[T]:
    """At most `total` items: round(total * m2020_fraction) from missions[1], the rest from missions[0].

    A mission with fewer items than its share gives all it has and the set comes out smaller
    (as in the paper's 16k cap, where M2020 has only 1,321 images); `composition()` tells.
    """
    if total < 0:
        raise ConfigError(f"mixed-domain total must be >= 0, got {total}")
    if not 0.0 <= m2020_fraction <= 1.0:
        raise ConfigError(f"M2020 fraction must be in [0, 1], got {m2020_fraction}")
    order = _shuffled_by_mission(items, seed)
    base, other = missions
    want_other = int(round(total * m2020_fraction))
    chosen = order.get(other, [])[:want_other] + order.get(base, [])[: total - want_other]
    return [items[i] for i in sorted(chosen)]


def composition(items: Sequence) -> dict[str, int]:
    """Item count per mission."""
    return dict(sorted(Counter(_mission(item) for item in items).items()))


# spacecraft clock windows: frames of one sequence lie seconds to minutes apart; a Mars sol is
# 88,775 s, so a 10,000 s window keeps a drive's frames together and still gives many groups
CLOCK_WINDOW_S = 10_000
_M2020 = re.compile(r"^[A-Z]{3}_(\d{4})_\d{10}")  # NLF_<sol>_<sclk>_...: grouped by sol
_MSL = re.compile(r"^[A-Z]{3}_(\d{9})")  # NLB_<sclk>EDR_...: the 9 digits after the instrument prefix
_MER = re.compile(r"^[12][A-Z](\d{9})")  # 1N<sclk>EFF...: spacecraft, camera, 9-digit sclk


def clock_group(name: str, window: int = CLOCK_WINDOW_S) -> tuple[str, int | str]:
    """The group a frame belongs to: ("sol", sol) for M2020 names, ("sclk", sclk // window) for MSL and
    MER names, and ("frame", name) for a name with no clock (it is then a group of its own)."""
    stem = name.rsplit("/", 1)[-1]
    for kind, pattern in (("sol", _M2020), ("sclk", _MSL), ("sclk", _MER)):
        match = pattern.match(stem)
        if match:
            value = int(match.group(1))
            return (kind, value) if kind == "sol" else (kind, value // window)
    return "frame", stem


def validation_split(
    items: Sequence[T], fraction: float = 0.1, seed: int = 0, window: int = CLOCK_WINDOW_S
) -> tuple[list[T], list[T]]:
    """(train, val), both in input order: about `fraction` of each mission's items go to val, whole
    clock groups at a time (`clock_group` of each item's `.name`), chosen in a seeded order.

    Groups are taken while they bring val closer to round(fraction x mission size); a mission with
    at least two groups gives val at least one when fraction > 0. Deterministic for a seed.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"validation fraction must be in [0, 1), got {fraction}")
    val: list[int] = []
    for mission, indices in sorted(_by_mission(items).items()):
        groups: dict[tuple, list[int]] = {}
        for i in indices:
            groups.setdefault(clock_group(str(items[i].name), window), []).append(i)
        keys = sorted(groups, key=str)
        rng = np.random.default_rng([seed, zlib.crc32(mission.encode()), 1])
        target, taken = fraction * len(indices), 0
        for k in rng.permutation(len(keys)):
            size = len(groups[keys[k]])
            first = not taken and fraction > 0 and len(keys) > 1
            if first or abs(taken + size - target) < abs(taken - target):
                val += groups[keys[k]]
                taken += size
    chosen = set(val)
    return [x for i, x in enumerate(items) if i not in chosen], [items[i] for i in sorted(chosen)]


def _by_mission(items: Sequence) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(_mission(item), []).append(i)
    return groups
