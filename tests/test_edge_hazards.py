"""Hazards in the traverse corridor: geometry, fractions, flags, the model's classes, config errors."""

from __future__ import annotations

import numpy as np
import pytest

from marsedge.edge.hazards import (
    NO_TERRAIN,
    HazardConfig,
    HazardRules,
    class_counts,
    class_fractions,
    corridor_mask,
    load_hazard_config,
)
from marsedge.errors import ConfigError
from marsedge.terrain import BACKGROUND, BIG_ROCK, IGNORE_INDEX, ROVER, SAND, SOIL, class_table

TABLE = class_table()


def assess(mask, table, cfg):
    return HazardRules.for_model(cfg, table).assess(mask)


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


@pytest.mark.parametrize("fill", [BACKGROUND, ROVER, IGNORE_INDEX])
def test_a_corridor_with_no_terrain_is_a_hazard_never_clear(fill):
    """Sky, the rover's own body or pixels below --min-confidence: the ground ahead was not seen."""
    cfg = HazardConfig()
    unseen = np.full((64, 64), SOIL, np.uint8)
    unseen[corridor_mask(64, 64, cfg)] = fill  # terrain all around, none inside the corridor
    result = assess(unseen, TABLE, cfg)
    assert result == {"corridor_terrain_pixels": 0, "big_rock": None, "sand": None,
                      "flags": [NO_TERRAIN], "hazard": True}
    unseen[-1, 32] = SOIL  # one terrain pixel: shares are measured again
    seen = assess(unseen, TABLE, cfg)
    assert seen["corridor_terrain_pixels"] == 1 and seen["hazard"] is False and seen["sand"] == 0.0


def test_class_fractions_sum_to_one():
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    f = class_fractions(mask, TABLE)
    assert f["soil"] == f["big rock"] == 0.25 and sum(f.values()) == pytest.approx(1.0)


def test_class_counts_are_bincounts_inside_and_outside_a_region():
    rng = np.random.default_rng(4)
    mask = rng.integers(0, 256, (61, 67), dtype=np.uint8)  # odd sizes: no SIMD-friendly width
    mask[:, :9] = 255  # the ignore id, counted like any other
    where = rng.random(mask.shape) < 0.3
    np.testing.assert_array_equal(class_counts(mask), np.bincount(mask.ravel(), minlength=256))
    np.testing.assert_array_equal(class_counts(mask, where.view(np.uint8)),
                                  np.bincount(mask[where], minlength=256))
    assert class_counts(mask, np.zeros_like(mask)).sum() == 0
    strided = mask[:, ::2]  # a view: not contiguous
    np.testing.assert_array_equal(class_counts(strided), np.bincount(strided.ravel(), minlength=256))


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


def test_a_broken_hazard_file_is_one_config_error(tmp_path):
    broken = tmp_path / "h.yaml"
    broken.write_text("hazards:\n  max_sand: [0.1\n")
    with pytest.raises(ConfigError, match=r"h\.yaml: not valid YAML") as caught:
        load_hazard_config(broken)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 2
    with pytest.raises(ConfigError, match="config file not found.*nope.yaml"):
        load_hazard_config(tmp_path / "nope.yaml")
    listed = tmp_path / "l.yaml"
    listed.write_text("- 0.1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_hazard_config(listed)


def test_a_four_class_model_judges_every_rule_like_the_six_class_one():
    cfg = HazardConfig(max_big_rock=0.1)
    mask = np.full((64, 64), SOIL, np.uint8)
    mask[40:] = BIG_ROCK
    four = HazardRules.for_model(cfg, class_table(4))
    assert four.skipped == {} and four.notes() == []
    assert four.assess(mask) == assess(mask, TABLE, cfg) and four.assess(mask)["flags"] == ["big_rock"]


def test_a_rule_whose_class_the_model_lacks_is_skipped_or_refused():
    # a 3-class model of its own table: no sand; ids are the model's, not the project's
    table = [{"id": i, "name": n, "colour": [i, i, i]} for i, n in enumerate(("soil", "big rock", "sky"))]
    rules = HazardRules.for_model(HazardConfig(max_big_rock=0.1), table)
    assert rules.skipped == {"sand": "sand"}
    assert rules.notes() == ["hazard rule sand skipped: the model has no class 'sand' "
                             "(hazards.missing_class: error refuses such a model)"]
    assert rules.describe() == {"rules": {"big_rock": {"class": "big rock", "limit": 0.1}},
                                "skipped": {"sand": "sand"}}
    mask = np.zeros((64, 64), np.uint8)
    mask[32:48] = 1  # big rock under this model's id 1 (the project's id 1 is bedrock)
    mask[48:] = 2  # sky is not ground
    result = rules.assess(mask)
    corridor = corridor_mask(64, 64, rules.config)
    assert result["corridor_terrain_pixels"] == int((corridor & (mask < 2)).sum())
    assert result["big_rock"] == pytest.approx((corridor & (mask == 1)).sum() / (corridor & (mask < 2)).sum(),
                                               abs=1e-4)
    assert result["sand"] is None and result["flags"] == ["big_rock"]
    with pytest.raises(ConfigError, match=r"hazards.max_sand: the model has no class 'sand' "
                                          r"\(its classes: soil, big rock, sky\)"):
        HazardRules.for_model(HazardConfig(missing_class="error"), table)
    with pytest.raises(ConfigError, match="hazards.missing_class must be one of skip, error"):
        HazardConfig(missing_class="ignore")


def test_a_model_that_knows_no_ground_is_said_once_at_the_start():
    table = [{"id": 0, "name": "sky", "colour": [0, 0, 0]}, {"id": 1, "name": "rover", "colour": [1, 1, 1]}]
    rules = HazardRules.for_model(HazardConfig(), table)
    assert rules.notes()[-1] == ("the model has none of the terrain classes (soil, bedrock, sand, big rock): "
                                 f"every frame will read hazard: true, flag {NO_TERRAIN}")
    assert rules.assess(np.zeros((32, 32), np.uint8))["flags"] == [NO_TERRAIN]
