"""Each loss against a value computed by hand on a 3-pixel, 2-class example.

    pixel a: logits [1, 0], label 0  ->  CE_a = log(1 + e^-1)
    pixel b: logits [2, 0], label 1  ->  CE_b = log(1 + e^2)     (predicted 0: a false negative)
    pixel c: logits [1, -1], label 255 (ignored: contributes nothing, not even to the pixel count)
    class frequencies f = [0.8, 0.2]
"""

import math

import pytest
import torch

from marsedge.train.losses import (
    CrossEntropyLoss,
    InverseFrequencyLoss,
    InverseFrequencyRecallLoss,
    OneMinusCompositionLoss,
    RecallCrossEntropyLoss,
    build_loss,
    inverse_frequency_weights,
)

CE_A = math.log(1 + math.exp(-1))
CE_B = math.log(1 + math.exp(2))
FREQ = [0.8, 0.2]


def example():
    logits = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, -1.0]]).T.reshape(1, 2, 1, 3)
    target = torch.tensor([[[0, 1, 255]]])
    return logits.requires_grad_(), target


def test_cross_entropy_ignores_255():
    logits, target = example()
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx((CE_A + CE_B) / 2, rel=1e-6)


def test_inverse_frequency_weights_are_normalised():
    # 1/f = [1.25, 5], mean 3.125 -> [0.4, 1.6]
    assert inverse_frequency_weights(FREQ).tolist() == pytest.approx([0.4, 1.6])
    # a class absent from training gets weight 0 and does not enter the mean
    assert inverse_frequency_weights([0.8, 0.2, 0.0]).tolist() == pytest.approx([0.4, 1.6, 0.0])


def test_inverse_frequency_loss():
    logits, target = example()
    expected = (0.4 * CE_A + 1.6 * CE_B) / 2
    assert InverseFrequencyLoss(FREQ)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_one_minus_composition_loss():
    logits, target = example()
    expected = (0.2 * CE_A + 0.8 * CE_B) / 2
    assert OneMinusCompositionLoss(FREQ)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_recall_loss_uses_running_recall():
    loss = RecallCrossEntropyLoss(num_classes=2, momentum=0.5)
    logits, target = example()
    # batch 1: class 0 recall 1 (a right) -> w0 = 0; class 1 recall 0 (b wrong) -> w1 = 1
    assert loss(logits, target).item() == pytest.approx((0 * CE_A + 1 * CE_B) / 2, rel=1e-6)
    assert loss.recall_weights().tolist() == pytest.approx([0.0, 1.0])
    # batch 2: one class-1 pixel predicted right. TP = .5*[1,0] + .5*[0,1] = [.5,.5],
    # FN = .5*[0,1] + .5*[0,0] = [0,.5] -> recall [1, .5] -> w = [0, .5]
    logits2 = torch.tensor([0.0, 3.0]).reshape(1, 2, 1, 1)
    target2 = torch.tensor([[[1]]])
    assert loss(logits2, target2).item() == pytest.approx(0.5 * math.log(1 + math.exp(-3)), rel=1e-6)
    # the running counts are state: a fresh loss loaded from it gives the same weights
    restored = RecallCrossEntropyLoss(num_classes=2, momentum=0.5)
    restored.load_state_dict(loss.state_dict())
    assert restored.recall_weights().tolist() == pytest.approx([0.0, 0.5])


def test_inverse_frequency_recall_loss():
    logits, target = example()
    value = InverseFrequencyRecallLoss(2, FREQ, momentum=0.9)(logits, target).item()
    assert value == pytest.approx((0.4 * 0 * CE_A + 1.6 * 1 * CE_B) / 2, rel=1e-6)


def test_all_ignored_gives_zero_loss_with_gradient():
    logits, _ = example()
    target = torch.full((1, 1, 3), 255)
    for name in ("ce", "inverse_frequency", "recall", "inverse_frequency_recall", "one_minus_composition"):
        loss = build_loss(name, 2, FREQ)(logits, target)
        assert loss.item() == 0.0
        loss.backward()  # a graph exists, so DDP's all-reduce still happens
        assert logits.grad is not None and torch.all(logits.grad == 0)


def test_gradient_flows_only_from_labelled_pixels():
    logits, target = example()
    CrossEntropyLoss()(logits, target).backward()
    assert torch.all(logits.grad[..., 2] == 0)  # the ignored pixel
    assert torch.all(logits.grad[..., :2].abs().sum(dim=1) > 0)


def test_weighted_losses_need_frequencies():
    with pytest.raises(ValueError, match="frequencies"):
        build_loss("inverse_frequency", 2)
