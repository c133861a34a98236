"""Optimisers (SGD, AdamW, LARS) and the warmup + decay learning-rate schedule.

Norm-layer weights and all biases (every parameter with fewer than 2 dimensions) go into a group
without weight decay, and LARS leaves them out of its trust-ratio scaling too, as SimCLR does.
The schedule is a function of the optimiser step, so a resumed run continues it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from marsedge.train.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017) on top of SGD with momentum.

    For a parameter w with gradient g in a group with `lars=True`:
        g <- g + wd * w
        trust = eta * ||w|| / ||g||   (1 when either norm is 0)
        v <- m * v + trust * g;  w <- w - lr * v
    Groups with `lars=False` (norm weights, biases) take plain SGD-with-momentum steps.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, lars=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                if group["lars"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["trust_coefficient"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    g = g.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def param_groups(named: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group (norms, biases)."""
    decay, no_decay = [], []
    for _, p in named:
        if not p.requires_grad:
            continue
        (no_decay if cfg.no_decay_norm_bias and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars": False})
    return [g for g in groups if g["params"]]


def _sgd(groups, cfg):
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def _adamw(groups, cfg):
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def _lars(groups, cfg):
    return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, trust_coefficient=cfg.lars_trust)


OPTIMIZERS: dict[str, Callable[[list[dict], OptimConfig], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adamw": _adamw,
    "lars": _lars,
}


def build_optimizer(named: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The configured optimiser over the trainable parameters (extra group keys such as `lars`
    are kept by torch and ignored by SGD and AdamW)."""
    return OPTIMIZERS[cfg.name](param_groups(named, cfg), cfg)


def lr_factor(step: int, total_steps: int, warmup_steps: int, cfg: OptimConfig) -> float:
    """The learning rate at `step` as a fraction of cfg.lr: linear warmup, then poly/cosine/constant.

        warmup:   (step + 1) / warmup_steps
        poly:     floor + (1 - floor) * (1 - t) ** power
        cosine:   floor + (1 - floor) * (1 + cos(pi t)) / 2
    with t = (step - warmup) / (total - warmup) in [0, 1] and floor = cfg.min_lr_ratio.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    floor = cfg.min_lr_ratio
    if cfg.schedule == "poly":
        return floor + (1 - floor) * (1 - t) ** cfg.poly_power
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR; its state (last_epoch = steps taken) goes into the checkpoint."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg)
    )
