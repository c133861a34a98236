"""Fuzz target for the hazard config loader (`edge-run --hazards`): whatever a YAML file holds, it
loads to a corridor that covers pixels and thresholds that can be crossed, or it is refused with one
ConfigError line; never a traceback, never a rule set that can only say "no hazard", never a
corridor that reads "clear" when it holds no ground."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marsedge.edge.hazards import NO_TERRAIN, HazardConfig, HazardRules, corridor_mask, load_hazard_config
from marsedge.errors import ConfigError
from marsedge.terrain import BACKGROUND, class_table

KEYS = ["top", "bottom", "top_width", "bottom_width", "centre", "max_big_rock", "max_sand", "missing_class"]
NUMBERS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-3, 3) | st.sampled_from(
    [0, 0.0, 1, 1.0, -0.0, 0.5, 1e-9, 1e300])
SCALARS = (NUMBERS | st.booleans() | st.none() | st.text(max_size=8)
           | st.sampled_from(["skip", "error", "nan"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=6)
MAPPINGS = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), VALUES, max_size=6)
DOCUMENTS = (MAPPINGS.map(yaml.safe_dump) | MAPPINGS.map(lambda m: yaml.safe_dump({"hazards": m}))
             | VALUES.map(yaml.safe_dump) | st.text(max_size=80))


def check(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hazards.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            config = load_hazard_config(path)
        except ConfigError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
    assert isinstance(config, HazardConfig)
    numbers = [getattr(config, k) for k in KEYS if k != "missing_class"]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers)
    assert config.top < config.bottom and config.top_width > 0 and config.bottom_width > 0
    rules = HazardRules.for_model(config, class_table(6))
    assert set(rules.rules) == {"big_rock", "sand"}
    for size in ((64, 64), (96, 128), (480, 640)):
        assert corridor_mask(*size, config).any()
        unseen = rules.assess(np.full(size, BACKGROUND, np.uint8))  # no ground ahead: never "clear"
        assert unseen["hazard"] is True and unseen["flags"] == [NO_TERRAIN]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_any_hazards_yaml_loads_to_a_usable_corridor_or_is_one_config_error(text):
    check(text)


def test_the_shapes_the_fuzzer_found_first():
    """Kept as plain cases: a zero-width corridor, a key holding a line break, the defaults."""
    check("top_width: 0\nbottom_width: 0\n")
    check("? '\n\n  '\n: []\ntop: null\n")
    check("{}\n")
    check("hazards: {top: 0.5}\n")
