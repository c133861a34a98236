"""Distillation losses: one loss, one class, the formula in the docstring.

All three compare a student with a frozen teacher and need no labels, so unlabelled frames feed them
as well as labelled ones. Shapes: logits N,K,H,W; features N,C,h,w. Where the student's map is not
the teacher's size, the student map is resized (bilinear) to the teacher's: the teacher is the
reference and is never touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _match_size(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if student.shape[-2:] == teacher.shape[-2:]:
        return student
    return F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)


class PixelKDLoss(nn.Module):
    """Pixel-wise knowledge distillation (Hinton et al. 2015, applied at every pixel).

        p^T = softmax(z^T / T),  p^S = softmax(z^S / T)        (over the K classes of one pixel)
        L   = T^2 / |P| * sum_{pixels p in P} sum_k p^T_k (log p^T_k - log p^S_k)

    P is every pixel of the batch, or the pixels where `mask` is true. The T^2 keeps the gradient
    scale independent of the temperature, so the weight against cross-entropy means the same at any T.
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = self.temperature
        student_logits = _match_size(student_logits.float(), teacher_logits)
        log_p_s = F.log_softmax(student_logits / t, dim=1)
        log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
        kl_per_pixel = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)  # N,H,W
        if mask is not None:
            kl_per_pixel = kl_per_pixel[mask]
            if kl_per_pixel.numel() == 0:
                return student_logits.sum() * 0.0  # keeps the graph; nothing to distil here
        return kl_per_pixel.mean() * t * t


class ChannelWiseLoss(nn.Module):
    """Channel-wise distillation (Shu et al., ICCV 2021).

    Each channel becomes a distribution over the spatial positions of its map:

        phi(y)_{c,i} = exp(y_{c,i} / tau) / sum_j exp(y_{c,j} / tau)      (i, j over the H*W positions)
        L = tau^2 / (N*C) * sum_{n,c} sum_i phi(y^T)_{n,c,i} (log phi(y^T)_{n,c,i} - log phi(A(y^S))_{n,c,i})

    A is a learned 1x1 convolution when the student has a different channel count from the teacher
    (features), the identity otherwise (logits: both have K classes). The student learns *where* each
    class/channel is most active, which suits dense prediction better than per-pixel matching.
    """

    def __init__(
        self, tau: float = 4.0, student_channels: int | None = None, teacher_channels: int | None = None
    ) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau = float(tau)
        needs_adapter = student_channels is not None and teacher_channels is not None and (
            student_channels != teacher_channels
        )
        self.adapter = nn.Conv2d(student_channels, teacher_channels, 1) if needs_adapter else nn.Identity()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student = _match_size(self.adapter(student).float(), teacher)
        n, c = teacher.shape[:2]
        log_phi_s = F.log_softmax(student.reshape(n, c, -1) / self.tau, dim=2)
        log_phi_t = F.log_softmax(teacher.float().reshape(n, c, -1) / self.tau, dim=2)
        kl = (log_phi_t.exp() * (log_phi_t - log_phi_s)).sum(dim=2)  # N,C
        return kl.mean() * self.tau * self.tau


class FeatureLoss(nn.Module):
    """Feature distillation on chosen stages (FitNets, Romero et al. 2015), one adapter per stage.

        L = 1/S * sum_{stages s} mean( (A_s(F^S_s) - F^T_s)^2 )

    A_s is a learned 1x1 convolution from the student stage's channels to the teacher stage's (the
    FitNets regressor: always present, because even equal channel counts do not share a basis), and
    the mean runs over the N*C*h*w elements of the teacher map. `pairs` maps a student stage name
    to the teacher stage it imitates, e.g. {"low": "low", "out": "out"}.
    """

    def __init__(
        self, pairs: dict[str, str], student_channels: dict[str, int], teacher_channels: dict[str, int]
    ) -> None:
        super().__init__()
        if not pairs:
            raise ValueError("feature distillation needs at least one (student stage, teacher stage) pair")
        self.pairs = dict(pairs)
        self.adapters = nn.ModuleDict(
            {s: nn.Conv2d(student_channels[s], teacher_channels[t], 1) for s, t in self.pairs.items()}
        )

    def forward(
        self, student_feats: dict[str, torch.Tensor], teacher_feats: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        terms = []
        for s, t in self.pairs.items():
            target = teacher_feats[t].float()
            adapted = _match_size(self.adapters[s](student_feats[s]).float(), target)
            terms.append(F.mse_loss(adapted, target))
        return torch.stack(terms).mean()
