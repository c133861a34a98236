"""Optimisers and schedule: no decay on norms and biases, LARS's trust ratio, warmup then poly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from marsedge.train.config import OptimConfig
from marsedge.train.engine.optim import LARS, build_optimizer, build_scheduler, lr_factor, param_groups


def small_net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_norm_weights_and_biases_get_no_weight_decay():
    net = small_net()
    groups = param_groups(net.named_parameters(), OptimConfig(weight_decay=0.01))
    decayed, plain = groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0 and plain["lars"] is False
    assert {id(p) for p in decayed["params"]} == {id(net[0].weight), id(net[2].weight)}
    assert len(plain["params"]) == 4  # two conv biases, BN weight and bias


def test_frozen_parameters_are_left_out():
    net = small_net()
    net[0].requires_grad_(False)
    opt = build_optimizer(net.named_parameters(), OptimConfig(name="adamw"))
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(net[0].weight) not in ids and id(net[2].weight) in ids


def test_lars_step_by_hand():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0, "lars": False}],
               lr=0.5, momentum=0.9, trust_coefficient=0.01)
    w.grad = torch.tensor([0.0, 1.0])
    b.grad = torch.tensor([2.0])
    opt.step()
    g = torch.tensor([0.3, 1.4])  # grad + 0.1 * w
    trust = 0.01 * 5.0 / math.hypot(0.3, 1.4)
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 0.5 * trust * g)
    torch.testing.assert_close(b.detach(), torch.tensor([1.0 - 0.5 * 2.0]))  # plain SGD step


def test_warmup_then_poly():
    cfg = OptimConfig(schedule="poly", poly_power=0.9, warmup_epochs=1.0)
    # 10 steps per epoch, 100 in all: warmup steps 0..9 ramp to 1, then (1 - t)^0.9
    assert lr_factor(0, 100, 10, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, cfg) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(100, 100, 10, cfg) == pytest.approx(0.0)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = build_scheduler(opt, cfg, total_steps=100, steps_per_epoch=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)
    for _ in range(55):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5 ** 0.9)
