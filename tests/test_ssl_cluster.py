"""k-means on features (what `marsedge cluster` runs) and the clusters file the pretraining reads."""

import json

import numpy as np
import pytest

from marsedge.errors import ConfigError, DataError
from marsedge.ssl.cluster import kmeans, load_clusters


def test_kmeans_recovers_separated_directions():
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 5.0
    truth = np.repeat(np.arange(3), 20)
    features = centres[truth] + rng.normal(0, 0.3, (60, 4))
    ids, inertia = kmeans(features, 3, seed=0)
    # the same partition up to renaming of the clusters
    for c in range(3):
        assert len(set(ids[truth == c])) == 1
    assert len(set(ids)) == 3 and inertia >= 0
    with pytest.raises(ConfigError, match="--k"):
        kmeans(features, 61)


def test_load_clusters_checks_k_and_format(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"k": 2, "clusters": {"a": 0, "b": 1}}))
    assert load_clusters(path, 2) == {"a": 0, "b": 1}
    with pytest.raises(ConfigError, match="num_clusters"):
        load_clusters(path, 3)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="not a clusters file"):
        load_clusters(path, None)
    with pytest.raises(ConfigError, match="no such file"):
        load_clusters(tmp_path / "missing.json", None)
