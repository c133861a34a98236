"""Cluster-aware NT-Xent's two readings of the homogeneous-Mars paper, by hand (temperature 1).

Frames a0 = e1, a1 = e2, a2 = -e1, each frame's two views identical (z_b = z_a); clusters [0, 0, 1].
Cosines from a0: its own other view 1, frame 1's views 0, frame 2's views -1.
"""

import math

import pytest
import torch

from marsedge.ssl.contrastive import ClusterAwareNTXentLoss, NTXentLoss

E = math.e
Z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
CLUSTERS = torch.tensor([0, 0, 1])


def loss(mode, z=Z, clusters=CLUSTERS):
    return ClusterAwareNTXentLoss(temperature=1.0, cluster_mode=mode)(z, z.clone(), clusters).item()


def test_eliminate_drops_same_cluster_views_from_the_denominator():
    # a0: frame 1 (same cluster) leaves: e / (e + 2/e); a1: frame 0 leaves: e / (e + 2 x e^0);
    # a2: alone in its cluster, plain NT-Xent: e / (e + 2/e + 2)
    a0 = -math.log(E / (E + 2 / E))
    a1 = -math.log(E / (E + 2))
    a2 = -math.log(E / (E + 2 / E + 2))
    assert loss("eliminate") == pytest.approx((a0 + a1 + a2) / 3, rel=1e-6)  # b views mirror a views


def test_attract_makes_same_cluster_views_positives():
    # a0: positives {own view (cos 1), frame 1's two views (cos 0)}, denominator over all 5 others
    # e + 2 + 2/e: -(1/3)(1 + 0 + 0 - 3 log D) = log D - 1/3; a1 likewise with D = e + 4;
    # a2 has only its own view as positive: plain NT-Xent
    a0 = math.log(E + 2 + 2 / E) - 1 / 3
    a1 = math.log(E + 4) - 1 / 3
    a2 = -math.log(E / (E + 2 / E + 2))
    assert loss("attract") == pytest.approx((a0 + a1 + a2) / 3, rel=1e-6)


def test_two_frames_of_one_cluster_by_hand():
    z, clusters = torch.eye(2), torch.tensor([5, 5])
    assert loss("eliminate", z, clusters) == pytest.approx(0.0, abs=1e-6)  # nothing left but the positive
    assert loss("attract", z, clusters) == pytest.approx(math.log(E + 2) - 1 / 3, rel=1e-6)
    nt = NTXentLoss(temperature=1.0)(z, z.clone()).item()
    assert nt == pytest.approx(-math.log(E / (E + 2)), rel=1e-6)


@pytest.mark.parametrize("mode", ["eliminate", "attract"])
def test_distinct_clusters_give_plain_nt_xent_and_gradients(mode):
    torch.manual_seed(0)
    z_a, z_b = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8)
    aware = ClusterAwareNTXentLoss(0.5, cluster_mode=mode)(z_a, z_b, torch.arange(6))
    torch.testing.assert_close(aware, NTXentLoss(0.5)(z_a, z_b))
    aware.backward()
    assert torch.isfinite(z_a.grad).all()


def test_attract_gradient_is_finite_with_whole_batch_in_one_cluster():
    torch.manual_seed(1)
    z_a = torch.randn(4, 3, requires_grad=True)
    out = ClusterAwareNTXentLoss(0.5, cluster_mode="attract")(z_a, torch.randn(4, 3), torch.zeros(4))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z_a.grad).all()


def test_unknown_mode_and_config_key():
    with pytest.raises(ValueError, match="cluster_mode"):
        ClusterAwareNTXentLoss(cluster_mode="repel")
    from marsedge import config
    from marsedge.errors import ConfigError
    from marsedge.train.modes.pretrain import PretrainConfig, SimCLRObjective

    objective = SimCLRObjective(0.5, cluster_aware=True, cluster_mode="attract")
    assert objective.loss.cluster_mode == "attract"
    assert PretrainConfig().pretrain.cluster_mode == "eliminate"
    with pytest.raises(ConfigError, match="pretrain.cluster_mode"):
        config.from_dict(PretrainConfig, {"pretrain": {"cluster_mode": "repel"}})
