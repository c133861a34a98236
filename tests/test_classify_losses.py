"""Wang et al.'s classification losses (marsedge.ssl.classification_losses), checked by hand.

Embeddings are unit vectors so that each cosine is read off directly; tau = 0.2, so a cosine s
becomes the logit 5 s.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from marsedge.ssl.classification_losses import (
    InterClassContrastiveLoss,
    SemiSupervisedClassificationLoss,
    SimilarityLoss,
)

# view 1 of three labelled images (classes 0, 1, 0) and view 2 of three images (classes 0, 1, 0)
Z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
Z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
LABELS = torch.tensor([0, 1, 0])
# cosines z1 . z2:  anchor 0: [1, 0, 0.6]   anchor 1: [0, 1, 0.8]   anchor 2: [1, 0, 0.6]
# anchor 0 (class 0): positives keys 0 and 2, the one negative key 1 (logit 0):
#   key 0: -log(e^5 / (e^5 + e^0)) = log(1 + e^-5) = 0.0067153
#   key 2: -log(e^3 / (e^3 + e^0)) = log(1 + e^-3) = 0.0485873      mean 0.0276514
# anchor 1 (class 1): positive key 1 (logit 5), negatives keys 0 and 2 (logits 0 and 4):
#   -log(e^5 / (e^5 + e^0 + e^4)) = log(1 + e^-5 + e^-1) = 0.3181754
# anchor 2 = anchor 0.   L_s = (0.0276514 + 0.3181754 + 0.0276514) / 3 = 0.1244927
HAND_LS = 0.1244927


def test_inter_class_contrastive_by_hand():
    loss = InterClassContrastiveLoss(temperature=0.2)(Z1, Z2, LABELS)
    assert loss.item() == pytest.approx(HAND_LS, abs=1e-6)


def test_inter_class_same_class_is_never_a_negative():
    # as above, but view 2 of image 2 (class 0) points away from the class-0 anchors: [-1, 0]
    # cosines: anchor 0: [1, 0, -1]  anchor 1: [0, 1, 0]  anchor 2: [1, 0, -1]
    # anchor 0: both class-0 keys are positives, each against the class-1 key only:
    #   key 0: log(1 + e^(0 - 5)) = 0.0067153    key 2: log(1 + e^(0 + 5)) = 5.0067153    mean 2.5067153
    #   (NT-Xent would also put key 2 in key 0's denominator: log(1 + e^-5 + e^-10); it is not there)
    # anchor 1: positive key 1 (5), negatives keys 0 and 2 (both 0): log(1 + 2 e^-5) = 0.0133857
    # L_s = (2.5067153 + 0.0133857 + 2.5067153) / 3 = 1.6756054
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    loss = InterClassContrastiveLoss(0.2)(Z1, z2, LABELS)
    assert loss.item() == pytest.approx(1.6756054, abs=1e-6)


def test_inter_class_one_image_per_class_is_softmax_over_classes():
    # the paper's batch: one image per class, z2_c a second image of class c -> eq. 2 is a C-way
    # softmax cross-entropy whose target is the anchor's own class
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    labels = torch.tensor([3, 0, 4, 1, 2])
    sims = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / 0.2
    expected = F.cross_entropy(sims, torch.arange(5))
    assert InterClassContrastiveLoss(0.2)(z1, z2, labels).item() == pytest.approx(expected.item(), abs=1e-5)


def test_inter_class_without_negatives_is_zero_with_finite_gradient():
    z1 = torch.randn(4, 3, requires_grad=True)
    loss = InterClassContrastiveLoss(0.2)(z1, torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(z1.grad).all()


def test_similarity_by_hand():
    # cos([1,0],[0,1]) = 0, cos([1,1],[2,2]) = 1 -> L_u = -(0 + 1) / 2 = -0.5 (scale does not matter)
    z1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z2 = torch.tensor([[0.0, 3.0], [2.0, 2.0]])
    assert SimilarityLoss()(z1, z2).item() == pytest.approx(-0.5, abs=1e-6)


def test_full_objective_by_hand():
    # CE on logits [[2, 0], [0, 1]] with labels [0, 1]: (log(1 + e^-2) + log(1 + e^-1)) / 2 = 0.2200948
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    u = (torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 3.0], [2.0, 2.0]]))  # L_u = -0.5
    full = SemiSupervisedClassificationLoss(lambda_s=1.0, lambda_u=0.2, temperature=0.2)
    total, parts = full(logits, labels, (Z1, Z2, LABELS), u)
    assert parts["ce"].item() == pytest.approx(0.2200948, abs=1e-6)
    assert parts["inter_class"].item() == pytest.approx(HAND_LS, abs=1e-6)
    assert parts["similarity"].item() == pytest.approx(-0.5, abs=1e-6)
    assert total.item() == pytest.approx(0.2200948 + 1.0 * HAND_LS + 0.2 * -0.5, abs=1e-6)
    # lambda_u = 0 is CE + eq. 2; both zero is CE alone (eq. 4)
    total_s, parts_s = SemiSupervisedClassificationLoss(1.0, 0.0)(logits, labels, (Z1, Z2, LABELS), u)
    assert total_s.item() == pytest.approx(0.2200948 + HAND_LS, abs=1e-6) and "similarity" not in parts_s
    total_ce, _ = SemiSupervisedClassificationLoss(0.0, 0.0)(logits, labels, (Z1, Z2, LABELS), u)
    assert total_ce.item() == pytest.approx(0.2200948, abs=1e-6)
