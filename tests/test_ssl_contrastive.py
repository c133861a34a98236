"""NT-Xent and cluster-aware NT-Xent against hand computations and an explicit reference."""

import math

import pytest
import torch

from marsedge.ssl.contrastive import ClusterAwareNTXentLoss, NTXentLoss


def test_nt_xent_matches_hand_computed_four_view_example():
    # views: a0=(1,0) a1=(0,1) b0=(1,1)/sqrt2 b1=(-1,1)/sqrt2; cosines are 0 or +-1/sqrt2
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    t = 0.5
    r = (1 / math.sqrt(2)) / t
    # anchor a0: positive b0 (r); negatives a1 (0), b1 (-r). Anchor b1 is the mirror case.
    l_a0 = -math.log(math.exp(r) / (math.exp(r) + 1 + math.exp(-r)))
    # anchor a1: positive b1 (r); negatives a0 (0), b0 (r). Anchor b0 is the mirror case.
    l_a1 = -math.log(math.exp(r) / (2 * math.exp(r) + 1))
    expected = (l_a0 + l_a1) / 2
    assert NTXentLoss(temperature=t)(z_a, z_b).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.5360, abs=1e-3)  # the numbers written out once


def reference_loss(z_a, z_b, t, clusters=None):
    """Explicit per-view loop: the definition, without any matrix tricks."""
    views = torch.nn.functional.normalize(torch.cat([z_a, z_b]), dim=1)
    n = z_a.shape[0]
    frame = list(range(n)) * 2
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = 0.0
        for k in range(2 * n):
            if k == i:
                continue
            same_cluster = clusters is not None and clusters[frame[k]] == clusters[frame[i]]
            if k != j and same_cluster:
                continue
            denominator += math.exp(float(views[i] @ views[k]) / t)
        total += -math.log(math.exp(float(views[i] @ views[j]) / t) / denominator)
    return total / (2 * n)


def test_cluster_aware_equals_nt_xent_when_clusters_distinct():
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    clusters = torch.tensor([5, 3, 0, 1, 9, 2])
    plain = NTXentLoss(0.3)(z_a, z_b)
    aware = ClusterAwareNTXentLoss(0.3)(z_a, z_b, clusters)
    assert aware.item() == pytest.approx(plain.item(), rel=1e-6)
    assert plain.item() == pytest.approx(reference_loss(z_a, z_b, 0.3), rel=1e-5)


def test_cluster_aware_drops_exactly_the_same_cluster_negatives():
    g = torch.Generator().manual_seed(1)
    z_a, z_b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    clusters = [0, 1, 0, 2, 1, 0]
    aware = ClusterAwareNTXentLoss(0.5)(z_a, z_b, torch.tensor(clusters)).item()
    assert aware == pytest.approx(reference_loss(z_a, z_b, 0.5, clusters), rel=1e-5)
    assert aware != pytest.approx(reference_loss(z_a, z_b, 0.5), rel=1e-3)  # something was dropped


def test_one_cluster_leaves_only_the_positive():
    # every other frame is a same-cluster negative: each anchor's fraction is e^pos / e^pos
    g = torch.Generator().manual_seed(2)
    z_a = torch.randn(3, 4, generator=g, requires_grad=True)
    z_b = torch.randn(3, 4, generator=g)
    loss = ClusterAwareNTXentLoss(0.5)(z_a, z_b, torch.tensor([1, 1, 1]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.allclose(z_a.grad, torch.zeros_like(z_a), atol=1e-6)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="N x D"):
        NTXentLoss()(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="clusters"):
        ClusterAwareNTXentLoss()(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature=0)
