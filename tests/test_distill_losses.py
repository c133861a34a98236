"""Each distillation loss against a value computed by hand, and the zero-when-equal property."""

import math

import pytest
import torch

from marsedge.distill.losses import ChannelWiseLoss, FeatureLoss, PixelKDLoss

LN3 = math.log(3.0)
# softmax([ln 3, 0]) = [3/4, 1/4]; softmax([0, 0]) = [1/2, 1/2]
KL_34_VS_HALF = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)


def test_pixel_kd_matches_hand_computed_value():
    t = 2.0
    teacher = torch.tensor([2 * LN3, 0.0]).reshape(1, 2, 1, 1)  # / T -> [ln 3, 0]
    student = torch.zeros(1, 2, 1, 1)
    loss = PixelKDLoss(temperature=t)(student, teacher)
    assert loss.item() == pytest.approx(t * t * KL_34_VS_HALF, rel=1e-5)


def test_pixel_kd_averages_over_pixels_and_honours_mask():
    teacher = torch.zeros(1, 2, 1, 2)
    teacher[0, 0, 0, 0] = 2 * LN3  # pixel 0 disagrees with the uniform student, pixel 1 agrees
    student = torch.zeros(1, 2, 1, 2)
    kd = PixelKDLoss(temperature=2.0)
    assert kd(student, teacher).item() == pytest.approx(4 * KL_34_VS_HALF / 2, rel=1e-5)
    only_first = torch.tensor([[[True, False]]])
    assert kd(student, teacher, mask=only_first).item() == pytest.approx(4 * KL_34_VS_HALF, rel=1e-5)
    nothing = torch.zeros(1, 1, 2, dtype=torch.bool)
    assert kd(student, teacher, mask=nothing).item() == 0.0


def test_channel_wise_matches_hand_computed_value():
    tau = 2.0
    # channel 0: teacher [2 ln 3, 0] over two positions vs uniform student; channel 1: identical
    teacher = torch.tensor([[2 * LN3, 0.0], [1.0, -1.0]]).reshape(1, 2, 1, 2)
    student = torch.tensor([[0.0, 0.0], [1.0, -1.0]]).reshape(1, 2, 1, 2)
    loss = ChannelWiseLoss(tau=tau)(student, teacher)
    assert loss.item() == pytest.approx(tau * tau * KL_34_VS_HALF / 2, rel=1e-5)


def test_channel_wise_adapter_maps_student_channels_to_teacher():
    loss_fn = ChannelWiseLoss(tau=1.0, student_channels=1, teacher_channels=2)
    assert isinstance(loss_fn.adapter, torch.nn.Conv2d)
    with torch.no_grad():
        loss_fn.adapter.weight.copy_(torch.tensor([1.0, 0.0]).reshape(2, 1, 1, 1))
        loss_fn.adapter.bias.zero_()
    student = torch.tensor([LN3, 0.0]).reshape(1, 1, 1, 2)  # adapted: channel 0 = [ln 3, 0], channel 1 = 0
    teacher = torch.zeros(1, 2, 1, 2)  # both channels uniform over the two positions
    expected = (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) / 2  # KL(uniform || [3/4,1/4]) / C
    assert loss_fn(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_feature_loss_matches_hand_computed_value():
    loss_fn = FeatureLoss({"out": "layer4"}, student_channels={"out": 1}, teacher_channels={"layer4": 2})
    with torch.no_grad():
        loss_fn.adapters["out"].weight.fill_(2.0)
        loss_fn.adapters["out"].bias.zero_()
    student = {"out": torch.ones(1, 1, 1, 1)}  # adapted -> [2, 2]
    teacher = {"layer4": torch.tensor([3.0, 5.0]).reshape(1, 2, 1, 1)}
    assert loss_fn(student, teacher).item() == pytest.approx(((2 - 3) ** 2 + (2 - 5) ** 2) / 2)


def test_feature_loss_resizes_student_to_teacher_map():
    loss_fn = FeatureLoss({"low": "low"}, {"low": 3}, {"low": 3})
    student = {"low": torch.randn(2, 3, 4, 4, requires_grad=True)}
    teacher = {"low": torch.randn(2, 3, 8, 8)}
    loss = loss_fn(student, teacher)
    loss.backward()
    assert loss.item() > 0 and student["low"].grad is not None


@pytest.mark.parametrize("loss_fn", [PixelKDLoss(4.0), ChannelWiseLoss(4.0)])
def test_kd_losses_are_zero_when_student_equals_teacher(loss_fn):
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 8, 8) * 5
    assert loss_fn(logits.clone(), logits).item() == pytest.approx(0.0, abs=1e-6)
    # softmax ignores a constant offset (over classes for KD, over positions for channel-wise)
    assert loss_fn(logits + 3.0, logits).item() == pytest.approx(0.0, abs=1e-5)


def test_kd_losses_are_positive_when_they_differ():
    torch.manual_seed(1)
    teacher, student = torch.randn(2, 6, 8, 8), torch.randn(2, 6, 8, 8)
    assert PixelKDLoss(2.0)(student, teacher).item() > 0
    assert ChannelWiseLoss(2.0)(student, teacher).item() > 0


def test_bad_temperature_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        PixelKDLoss(0.0)
    with pytest.raises(ValueError, match="tau"):
        ChannelWiseLoss(-1.0)
