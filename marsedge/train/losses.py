"""Segmentation losses: one class per loss, the formula in its docstring.

Notation: logits z (N,K,H,W), true class y_i of pixel i, p_i = softmax(z_i), V = pixels whose y_i
is not the ignore index (255), |V| their number, f_c = the share of class c among the labelled
training pixels (computed once from the training labels, see marsedge.train.supervised).

Every weighted loss here is the pixel mean of weighted cross-entropy terms,

    L = 1/|V| * sum_{i in V} w_{y_i} * (-log p_i[y_i]),

so the weights change the balance between classes and the plain CE is w = 1. A batch without any
labelled pixel gives a zero loss that still has a gradient path (so DDP does not hang).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marsedge.terrain import IGNORE_INDEX


def pixel_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """-log p_i[y_i] per pixel (N,H,W), 0 at ignored pixels; computed in float32."""
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")


def _weighted_mean(ce: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                   ignore_index: int) -> torch.Tensor:
    valid = target != ignore_index
    w = weights.to(ce.device)[target.clamp(0, len(weights) - 1)] * valid
    return (w * ce).sum() / valid.sum().clamp(min=1)


def inverse_frequency_weights(frequencies: Sequence[float]) -> torch.Tensor:
    """w_c = (1/f_c) / mean_{k: f_k > 0}(1/f_k) for present classes, 0 for classes never seen.

    Normalised to mean 1 over the present classes so the loss keeps the scale of plain CE (the raw
    1/f_c of a rare class would be in the thousands and swamp the learning rate).
    """
    f = torch.as_tensor(np.asarray(frequencies, dtype=np.float64))
    inv = torch.where(f > 0, 1.0 / f.clamp(min=1e-12), torch.zeros_like(f))
    present = f > 0
    return (inv / inv[present].mean()).float() if present.any() else inv.float()


class CrossEntropyLoss(nn.Module):
    """L = 1/|V| * sum_{i in V} -log p_i[y_i]   (pixels labelled 255 are ignored)."""

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = pixel_ce(logits, target, self.ignore_index)
        return ce.sum() / (target != self.ignore_index).sum().clamp(min=1)


class WeightedCrossEntropyLoss(nn.Module):
    """L = 1/|V| * sum_{i in V} w_{y_i} * (-log p_i[y_i]) with fixed class weights w."""

    def __init__(self, weights: Sequence[float] | torch.Tensor, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32))
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _weighted_mean(pixel_ce(logits, target, self.ignore_index), target, self.weights,
                              self.ignore_index)


class InverseFrequencyLoss(WeightedCrossEntropyLoss):
    """Inverse-frequency CE (multi-mission paper, eq. 3) with normalised weights:

        w_c = (1/f_c) / mean_k(1/f_k),   L = 1/|V| * sum_{i in V} w_{y_i} * (-log p_i[y_i])
    """

    def __init__(self, frequencies: Sequence[float], ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(inverse_frequency_weights(frequencies), ignore_index)


class OneMinusCompositionLoss(WeightedCrossEntropyLoss):
    """The AI4Mars dataset paper's weighting: w_c = 1 - f_c ("1 - composition").

        L = 1/|V| * sum_{i in V} (1 - f_{y_i}) * (-log p_i[y_i])
    """

    def __init__(self, frequencies: Sequence[float], ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__([1.0 - float(f) for f in frequencies], ignore_index)


class RecallCrossEntropyLoss(nn.Module):
    """Recall loss (Tian et al. 2022; multi-mission paper, eq. 4): CE weighted by each class's
    current false-negative rate, so classes the model misses get more weight.

        R_c,t = TP_c,t / (TP_c,t + FN_c,t),   w_c,t = 1 - R_c,t
        L = 1/|V| * sum_{i in V} w_{y_i},t * (-log p_i[y_i])

    TP and FN are running statistics: each batch's counts (from argmax predictions, no gradient)
    update an exponential moving average, TP <- m * TP + (1 - m) * TP_batch (m = momentum; m = 0
    uses the current batch only; the first batch initialises them). The recall comes from the
    averages *after* this batch's update. A class never seen keeps weight 1. The counts are buffers,
    so they are checkpointed (pass the loss as `extra_state`) and a resume continues them exactly.
    `class_weights` multiplies w (inverse frequency + recall uses it).
    """

    def __init__(self, num_classes: int, momentum: float = 0.9, ignore_index: int = IGNORE_INDEX,
                 class_weights: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.momentum = momentum
        self.ignore_index = ignore_index
        self.register_buffer("tp", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("fn", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        base = torch.ones(num_classes) if class_weights is None else torch.as_tensor(class_weights)
        self.register_buffer("class_weights", base.float())

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Fold one batch's per-class TP and FN counts into the running averages."""
        valid = target != self.ignore_index
        y = target[valid]
        hit = logits.argmax(dim=1)[valid] == y
        k = self.num_classes
        support = torch.bincount(y, minlength=k)[:k].double()
        tp = torch.bincount(y[hit], minlength=k)[:k].double()
        fn = support - tp
        if not bool(self.seen):
            self.tp.copy_(tp)
            self.fn.copy_(fn)
            self.seen.fill_(True)
        else:
            self.tp.mul_(self.momentum).add_(tp, alpha=1 - self.momentum)
            self.fn.mul_(self.momentum).add_(fn, alpha=1 - self.momentum)

    def recall_weights(self) -> torch.Tensor:
        """w_c = 1 - TP_c / (TP_c + FN_c); 1 for a class with no pixels so far."""
        total = self.tp + self.fn
        recall = torch.where(total > 0, self.tp / total.clamp(min=1e-12), torch.zeros_like(total))
        return (1.0 - recall).float()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.update(logits, target)
        weights = self.recall_weights() * self.class_weights
        return _weighted_mean(pixel_ce(logits, target, self.ignore_index), target, weights,
                              self.ignore_index)


class InverseFrequencyRecallLoss(RecallCrossEntropyLoss):
    """Inverse frequency + recall (multi-mission paper, Table 2's best Big Rock recall):

        w_c,t = (1/f_c) / mean_k(1/f_k) * (1 - R_c,t),   L = 1/|V| * sum_{i in V} w_{y_i},t * (-log p_i[y_i])
    """

    def __init__(self, num_classes: int, frequencies: Sequence[float], momentum: float = 0.9,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(num_classes, momentum, ignore_index, inverse_frequency_weights(frequencies))


# name -> (needs class frequencies, builder(num_classes, frequencies, momentum))
LossBuilder = Callable[[int, Sequence[float] | None, float], nn.Module]
LOSSES: dict[str, tuple[bool, LossBuilder]] = {
    "ce": (False, lambda k, f, m: CrossEntropyLoss()),
    "inverse_frequency": (True, lambda k, f, m: InverseFrequencyLoss(f)),
    "recall": (False, lambda k, f, m: RecallCrossEntropyLoss(k, m)),
    "inverse_frequency_recall": (True, lambda k, f, m: InverseFrequencyRecallLoss(k, f, m)),
    "one_minus_composition": (True, lambda k, f, m: OneMinusCompositionLoss(f)),
}


def needs_frequencies(name: str) -> bool:
    return LOSSES[name][0]


def build_loss(name: str, num_classes: int, frequencies: Sequence[float] | None = None,
               recall_momentum: float = 0.9) -> nn.Module:
    """The loss a config names; weighted losses need the training-set class frequencies."""
    needs, builder = LOSSES[name]
    if needs and frequencies is None:
        raise ValueError(f"loss {name!r} needs the class frequencies of the training labels")
    if frequencies is not None and len(frequencies) != num_classes:
        raise ValueError(f"{len(frequencies)} class frequencies for {num_classes} classes")
    return builder(num_classes, frequencies, recall_momentum)
