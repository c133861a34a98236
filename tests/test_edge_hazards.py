"""Hazards in the traverse corridor: geometry, fractions, flags, config errors."""

from __future__ import annotations

import numpy as np
import pytest

from marsedge.edge.hazards import HazardConfig, assess, class_fractions, corridor_mask, load_hazard_config
from marsedge.errors import ConfigError
from marsedge.terrain import BACKGROUND, BIG_ROCK, ROVER, SAND, SOIL, class_table

TABLE = class_table()


def test_corridor_is_a_trapezoid_at_the_bottom():
    cfg = HazardConfig(top=0.5, bottom=1.0, top_width=0.2, bottom_width=0.8)
    m = corridor_mask(100, 200, cfg)
    assert not m[:49].any()  # nothing above the far edge
    assert m[99, 100] and not m[99, 5]  # near edge: 160 px wide, centred
    assert abs(int(m[99].sum()) - 160) <= 2 and abs(int(m[50].sum()) - 40) <= 3
    assert not m.flags.writeable


def test_fractions_count_terrain_inside_the_corridor_only():
    cfg = HazardConfig(top=0.5, bottom=1.0, top_width=1.0, bottom_width=1.0, max_big_rock=0.1, max_sand=0.5)
    mask = np.full((100, 100), SOIL, np.uint8)
    mask[:50] = BIG_ROCK  # outside the corridor: ignored
    mask[50:60] = BIG_ROCK  # 10 rows of 50 inside
    mask[90:] = ROVER  # rover body is not ground: excluded from the denominator
    result = assess(mask, TABLE, cfg)
    assert result["big_rock"] == pytest.approx(10 / 40, abs=1e-3)
    assert result["sand"] == 0.0
    assert result["flags"] == ["big_rock"] and result["hazard"] is True


def test_sand_flag_and_quiet_corridor():
    cfg = HazardConfig(max_sand=0.25)
    sandy = np.full((64, 64), SAND, np.uint8)
    assert assess(sandy, TABLE, cfg)["flags"] == ["sand"]
    calm = np.full((64, 64), SOIL, np.uint8)
    quiet = assess(calm, TABLE, cfg)
    assert quiet["corridor_terrain_pixels"] == int(corridor_mask(64, 64, cfg).sum())
    assert (quiet["big_rock"], quiet["sand"], quiet["flags"], quiet["hazard"]) == (0.0, 0.0, [], False)
    sky = np.full((64, 64), BACKGROUND, np.uint8)
    assert assess(sky, TABLE, cfg)["corridor_terrain_pixels"] == 0 and not assess(sky, TABLE, cfg)["hazard"]


def test_class_fractions_sum_to_one():
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    f = class_fractions(mask, TABLE)
    assert f["soil"] == f["big rock"] == 0.25 and sum(f.values()) == pytest.approx(1.0)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="hazards.max_sand"):
        HazardConfig(max_sand=1.5)
    with pytest.raises(ConfigError, match="must be above"):
        HazardConfig(top=0.9, bottom=0.5)
    bad = tmp_path / "h.yaml"
    bad.write_text("hazards:\n  max_snad: 0.1\n")
    with pytest.raises(ConfigError, match="hazards.max_snad.*max_sand"):
        load_hazard_config(bad)
    good = tmp_path / "g.yaml"
    good.write_text("hazards:\n  max_sand: 0.1\n")
    assert load_hazard_config(good).max_sand == 0.1
