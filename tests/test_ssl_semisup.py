"""Memory bank queue semantics, the element-wise contrastive loss and pseudo labels."""

import math

import pytest
import torch

from marsedge.ssl.elementwise import (
    ClassMemoryBank,
    ElementwiseContrastiveLoss,
    downsample_labels,
    pseudo_labels,
)


def unit(*v):
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def test_bank_pushes_one_class_mean_per_class_present():
    bank = ClassMemoryBank(num_classes=3, dim=2, length=4)
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 2, 255])  # the ignore pixel must not count anywhere
    bank.push(feats, labels)
    assert bank.filled.tolist() == [1, 0, 1]
    torch.testing.assert_close(bank.queue[0, 0], unit(1, 0))  # mean of the normalised features
    torch.testing.assert_close(bank.queue[2, 0], unit(0, 1))
    _, seen = bank.prototypes()
    assert seen.tolist() == [True, False, True]


def test_bank_queue_is_fifo_of_fixed_length():
    bank = ClassMemoryBank(num_classes=1, dim=2, length=3)
    pushed = [unit(1, k) for k in range(5)]
    for v in pushed:
        bank.push(v[None], torch.tensor([0]))
    assert int(bank.filled[0]) == 3
    # the two oldest entries were dropped; the queue holds the last three
    held = {tuple(round(x, 5) for x in row.tolist()) for row in bank.queue[0]}
    assert held == {tuple(round(x, 5) for x in v.tolist()) for v in pushed[2:]}
    means, _ = bank.prototypes()
    torch.testing.assert_close(means[0], torch.stack(pushed[2:]).mean(0))


def test_bank_prototype_averages_only_filled_entries():
    bank = ClassMemoryBank(num_classes=2, dim=2, length=32)
    bank.push(torch.tensor([[2.0, 0.0]]), torch.tensor([1]))
    bank.push(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    means, seen = bank.prototypes()
    torch.testing.assert_close(means[1], torch.tensor([0.5, 0.5]))  # not divided by 32
    assert seen.tolist() == [False, True]


def test_bank_state_round_trip_and_shape_check():
    bank = ClassMemoryBank(num_classes=2, dim=3, length=4)
    bank.push(torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1]))
    other = ClassMemoryBank(num_classes=2, dim=3, length=4)
    other.load_state_dict(bank.state_dict())
    torch.testing.assert_close(other.prototypes()[0], bank.prototypes()[0])
    assert other.head.tolist() == bank.head.tolist()
    with pytest.raises(ValueError, match="does not match"):
        ClassMemoryBank(num_classes=3, dim=3, length=4).load_state_dict(bank.state_dict())


def test_elementwise_loss_matches_eq7_by_hand():
    bank = ClassMemoryBank(num_classes=2, dim=2, length=32)
    bank.enqueue(0, unit(1, 0))
    bank.enqueue(1, unit(0, 1))
    loss_fn = ElementwiseContrastiveLoss(bank, temperature=0.5)
    # one labelled element of class 0 at (1, 1)/sqrt2, one ignored element; 1 x 2 x 1 x 2 map
    features = torch.tensor([[[[1.0, -3.0]], [[1.0, 2.0]]]])
    labels = torch.tensor([[[0, 255]]])
    loss = loss_fn(features, labels)
    # scored against the bank as it was (prototype 0 = unit(1,0)); the push of unit(1,1) comes after
    p0 = unit(1, 0)
    f = unit(1, 1)
    s0 = float(f @ p0 / p0.norm()) / 0.5
    s1 = float(f @ unit(0, 1)) / 0.5
    assert loss.item() == pytest.approx(-math.log(math.exp(s0) / (math.exp(s0) + math.exp(s1))), rel=1e-5)
    torch.testing.assert_close(bank.queue[0, 1], unit(1, 1))


def test_elementwise_loss_is_zero_with_graph_when_nothing_labelled():
    bank = ClassMemoryBank(num_classes=2, dim=4)
    features = torch.randn(1, 4, 2, 2, requires_grad=True)
    loss = ElementwiseContrastiveLoss(bank)(features, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and features.grad is not None
    assert int(bank.filled.sum()) == 0


def test_pseudo_labels_only_above_threshold_and_never_override():
    labels = torch.tensor([[[1, 255, 255, 255]]])
    # per pixel class probabilities (2 classes): pixel 0 is confidently class 0 but labelled 1
    probs = torch.tensor([[0.99, 0.95, 0.90, 0.40], [0.01, 0.05, 0.10, 0.60]])
    logits = probs.log()[None, :, None, :]  # 1 x 2 x 1 x 4
    merged = pseudo_labels(logits, labels, threshold=0.9)
    # pixel 0: real label kept; pixel 1: 0.95 > 0.9 -> class 0; pixel 2: exactly 0.9 is not above;
    # pixel 3: 0.6 is below the threshold -> stays unlabelled
    assert merged.tolist() == [[[1, 0, 255, 255]]]
    assert labels.tolist() == [[[1, 255, 255, 255]]]  # the input is untouched


def test_downsample_labels_is_nearest_and_keeps_ignore():
    labels = torch.tensor([[[0, 0, 3, 3], [0, 0, 3, 3], [255, 255, 1, 1], [255, 255, 1, 1]]])
    small = downsample_labels(labels, (2, 2))
    assert small.tolist() == [[[0, 3], [255, 1]]]
    assert small.dtype == torch.long


class _RecordingCE(torch.nn.Module):
    def forward(self, logits, target):
        self.target = target.clone()
        return torch.nn.functional.cross_entropy(logits, target, ignore_index=255)


class _FixedModel:
    """Stands in for the loop's dispatcher: `model(x, method="forward_train") -> (logits, embed)`."""

    def __init__(self, logits, embed):
        self.logits, self.embed = logits, embed

    def __call__(self, x, method="forward"):
        return self.logits, self.embed


def test_objective_pseudo_labels_reach_contrastive_term_only():
    from types import SimpleNamespace

    from marsedge.train.modes.semisup import SemisupObjective, StageConfig

    # 1 image, 2 classes, 2x2 pixels; pixel (0,0) labelled 0, the rest unlabelled but predicted
    # class 1 with confidence ~1
    logits = torch.tensor([[[[5.0, -9.0], [-9.0, -9.0]], [[-5.0, 9.0], [9.0, 9.0]]]], requires_grad=True)
    labels = torch.tensor([[[0, 255], [255, 255]]])
    embed = torch.randn(1, 3, 2, 2, requires_grad=True)
    ce = _RecordingCE()
    bank = ClassMemoryBank(num_classes=2, dim=3)
    stages = [StageConfig("pseudo", 1, ce=True, contrastive_weight=0.5, pseudo=True)]
    objective = SemisupObjective(stages, ce, ElementwiseContrastiveLoss(bank), threshold=0.9)
    batch = {"image": None, "label": labels}
    loss, logs = objective(_FixedModel(logits, embed), batch, SimpleNamespace(epoch=0))
    assert ce.target.tolist() == labels.tolist()  # CE saw the real labels only
    assert bank.filled.tolist() == [1, 1]  # the contrastive term saw class 1 via pseudo labels
    assert logs["pseudo_pixels"] == pytest.approx(0.75)
    loss.backward()
    assert embed.grad is not None and logits.grad is not None


def test_schedule_must_match_epochs_and_turn_something_on():
    from marsedge.errors import ConfigError
    from marsedge.train.modes.semisup import SemisupConfig, StageConfig

    cfg = SemisupConfig(epochs=180)
    cfg.validate()  # the paper's 60 + 60 + 60
    cfg.epochs = 100
    with pytest.raises(ConfigError, match="epochs"):
        cfg.validate()
    cfg = SemisupConfig(epochs=1)
    cfg.semisup.stages = [StageConfig("x", 1, ce=False, contrastive_weight=0.0)]
    with pytest.raises(ConfigError, match="stages"):
        cfg.validate()
