"""Label-fraction subsets (stratified by mission, nested, seeded) and mixed-domain compositions."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from marsedge.data.sampling import clock_group, composition, label_fraction, mixed_domain, validation_split
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


def msl_name(sclk: int) -> str:
    return f"NLB_{sclk:09d}EDR_F0580000NCAM00253M1"


def m2020_name(sol: int, k: int) -> str:
    return f"NLF_{sol:04d}_{667755959 + 40 * k:010d}_167ECM_N0030000NCAM05000_01_295J"


# 60 MSL drives of 5 frames seconds apart, 30 M2020 sols of 4 frames, 2 MER drives, 10 unclocked frames
CLOCKED = (
    [Frame(msl_name(400_000_000 + 50_000 * d + 7 * k), "msl") for d in range(60) for k in range(5)]
    + [Frame(m2020_name(100 + s, 4 * s + k), "m2020") for s in range(30) for k in range(4)]
    + [Frame(f"1N{128285276 + 90_000 * d + k:09d}EFF0454P1837L0M1", "mer") for d in (0, 1) for k in range(3)]
)


def test_clock_groups_parsed_from_names():
    assert clock_group(msl_name(527_820_640)) == ("sclk", 52_782)
    assert clock_group(m2020_name(9, 0)) == ("sol", 9)
    assert clock_group("1N128285276EFF0454P1837L0M1") == ("sclk", 12_828)
    assert clock_group("frame_0042") == ("frame", "frame_0042")


def test_validation_split_keeps_each_clock_group_on_one_side():
    train, val = validation_split(CLOCKED, fraction=0.1, seed=0)
    assert sorted(train + val, key=CLOCKED.index) == CLOCKED and not set(train) & set(val)
    train_groups = {clock_group(f.name) for f in train}
    val_groups = {clock_group(f.name) for f in val}
    assert not train_groups & val_groups
    counts = composition(val)
    assert counts["msl"] == 30 and counts["m2020"] == 12  # 10% of 300 and of 120, in whole groups
    assert counts["mer"] == 3  # two groups: one goes to val rather than none
    assert train == sorted(train, key=CLOCKED.index) and val == sorted(val, key=CLOCKED.index)


def test_validation_split_is_seeded_and_deterministic():
    a = validation_split(CLOCKED, 0.2, seed=1)
    assert a == validation_split(list(CLOCKED), 0.2, seed=1)
    assert a[1] != validation_split(CLOCKED, 0.2, seed=2)[1]
    assert abs(composition(a[1])["msl"] - 60) <= 5  # whole groups of 5: within one group of the target
    with pytest.raises(ConfigError, match="validation fraction"):
        validation_split(CLOCKED, 1.0)


def test_names_without_a_clock_are_one_group_per_frame():
    unclocked = [Frame(f"synthetic_{i:03d}", "msl") for i in range(50)]
    train, val = validation_split(unclocked, 0.1, seed=0)
    assert len(val) == 5 and len(train) == 45
    assert validation_split(unclocked, 0.0)[1] == []
