"""Training-set compositions: label fractions and mixed-domain (MSL + M2020) sets.

Both work on any list of items with a `mission` attribute (`ai4mars.Item`, `Sample`, ...) and are
seeded, so an experiment names its subset by (fraction or cap, seed) and gets the same images on
every machine.

- `label_fraction(items, 0.05, seed)`: 5% of each mission's items, so the M2020:MSL ratio of the
  full set holds in every subset (the 1%..100% experiments of the multi-mission paper). Subsets of
  one seed are nested: the 1% set lies inside the 5% set, which lies inside the 10% set.
- `mixed_domain(items, total=1321, m2020_fraction=0.25, seed)`: a set capped at `total` images of
  which a fraction comes from M2020 and the rest from MSL (the paper's Fig. 2 compositions).
"""

from __future__ import annotations

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
