"""The false-negative-per-batch simulation (homogeneous-Mars paper, appendix B)."""

import numpy as np
import pytest

from marsedge.errors import ConfigError
from marsedge.ssl.fn_rate import (
    balanced,
    batch_fn_rates,
    curiosity_like_distribution,
    expected_fn_rate,
    parse_distribution,
    simulate_fn_rate,
)


def test_batch_fn_rate_counts_view_pairs_by_hand():
    # 3 frames, classes [0, 0, 1]: frames 0 and 1 give 2x2 = 4 false negative view pairs
    # out of C(6, 2) = 15 view pairs in all
    assert batch_fn_rates(np.array([[0, 0, 1]]), 2)[0] == pytest.approx(4 / 15)
    assert batch_fn_rates(np.array([[0, 1, 2]]), 3)[0] == 0.0
    # all 4 frames the same class: every pair of views from different frames, 4 * C(4,2) = 24 of 28
    assert batch_fn_rates(np.array([[3, 3, 3, 3]]), 4)[0] == pytest.approx(24 / 28)


def test_simulation_agrees_with_closed_form():
    for probs in (balanced(10), curiosity_like_distribution()):
        sim = simulate_fn_rate(probs, batch_size=64, batches=2000, seed=1)
        assert sim == pytest.approx(expected_fn_rate(probs, 64), rel=0.03)


def test_paper_shape_balanced_and_presets():
    # ~10 % for 10 balanced classes, whatever the batch size or dataset size
    for b in (32, 256):
        assert simulate_fn_rate(balanced(10), b, 500) == pytest.approx(0.10, abs=0.01)
    assert simulate_fn_rate(balanced(10), 128, 200, dataset_size=2000) == pytest.approx(0.10, abs=0.01)
    curiosity = simulate_fn_rate(parse_distribution(preset="curiosity"), 128, 500)
    imagenet = simulate_fn_rate(parse_distribution(preset="imagenet"), 128, 500)
    assert 0.12 < curiosity < 0.20  # the paper reports ~15 %
    assert imagenet < 0.0015  # the paper reports ~0.08 %
    assert curiosity / imagenet > 100


def test_curiosity_distribution_hits_the_published_extremes():
    p = curiosity_like_distribution()
    assert len(p) == 19 and p.sum() == pytest.approx(1.0)
    assert p.max() == pytest.approx(0.3476) and p.min() == pytest.approx(0.0034, rel=1e-6)
    assert (np.diff(p) <= 0).all()


def test_distribution_arguments_are_checked():
    assert parse_distribution(weights="1,1,2").tolist() == [0.25, 0.25, 0.5]
    with pytest.raises(ConfigError, match="exactly one"):
        parse_distribution(classes=3, preset="imagenet")
    with pytest.raises(ConfigError, match="--preset"):
        parse_distribution(preset="mars")
    with pytest.raises(ConfigError, match="--weights"):
        parse_distribution(weights="1,x")
    with pytest.raises(ConfigError, match="batch"):
        simulate_fn_rate(balanced(3), batch_size=1)
