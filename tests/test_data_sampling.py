"""Label-fraction subsets (stratified by mission, nested, seeded) and mixed-domain compositions."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from marsedge.data.sampling import composition, label_fraction, mixed_domain
from marsedge.errors import ConfigError


@dataclass(frozen=True)
class Frame:
    name: str
    mission: str


ITEMS = [Frame(f"msl{i}", "msl") for i in range(1000)] + [Frame(f"m20{i}", "m2020") for i in range(100)]


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
def test_label_fraction_keeps_the_mission_ratio(fraction):
    subset = label_fraction(ITEMS, fraction, seed=3)
    counts = composition(subset)
    assert counts == {"m2020": round(100 * fraction), "msl": round(1000 * fraction)}
    assert counts["msl"] / counts["m2020"] == pytest.approx(10.0)


def test_label_fractions_are_nested_seeded_and_in_input_order():
    one, five, ten = (set(label_fraction(ITEMS, f, seed=1)) for f in (0.01, 0.05, 0.1))
    assert one < five < ten
    assert label_fraction(ITEMS, 0.05, seed=1) == label_fraction(ITEMS, 0.05, seed=1)
    assert label_fraction(ITEMS, 0.05, seed=1) != label_fraction(ITEMS, 0.05, seed=2)
    subset = label_fraction(ITEMS, 0.05, seed=1)
    assert subset == sorted(subset, key=ITEMS.index)


def test_small_missions_keep_at_least_one_item():
    items = ITEMS[:200] + ITEMS[-3:]
    assert composition(label_fraction(items, 0.01)) == {"m2020": 1, "msl": 2}
    assert label_fraction(items, 0.0) == []
    with pytest.raises(ConfigError, match="label fraction"):
        label_fraction(items, 1.5)


@pytest.mark.parametrize(
    "fraction, expected",
    [
        (0.0, {"msl": 400}),
        (0.25, {"m2020": 100, "msl": 300}),
        (1.0, {"m2020": 100}),
    ],
)
def test_mixed_domain_compositions(fraction, expected):
    subset = mixed_domain(ITEMS, total=400 if fraction < 1 else 100, m2020_fraction=fraction, seed=0)
    assert composition(subset) == expected


def test_mixed_domain_short_mission_gives_all_it_has():
    # the paper's 16k cap: M2020 has fewer images than a 50% share asks for
    subset = mixed_domain(ITEMS, total=1000, m2020_fraction=0.5, seed=0)
    assert composition(subset) == {"m2020": 100, "msl": 500}
    with pytest.raises(ConfigError, match="M2020 fraction"):
        mixed_domain(ITEMS, total=10, m2020_fraction=-0.1)
