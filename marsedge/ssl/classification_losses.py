"""The semi-supervised classification losses of Wang et al. (section 4): eq. 2, eq. 3 and eq. 5.

Cross-entropy (eq. 4) is torch's `F.cross_entropy`. K(u, v) = u.v / (|u| |v|) throughout.

Supervised inter-class contrastive loss (eq. 2), `InterClassContrastiveLoss(temperature=0.2)`:

    L_s = -E_i mean_{p: y_p = y_i} log  exp(K(z1_i, z2_p) / t)
                                 / (exp(K(z1_i, z2_p) / t) + sum_{k: y_k != y_i} exp(K(z1_i, z2_k) / t))

z1_i is view 1 of labelled image i, z2_k view 2 of image k. Same-class samples are positives
(including the other view of image i itself) and only other classes are negatives: a same-class
sample never sits in the denominator as a negative. With one image per class in the batch (the
paper's 24-class batch, z2_c a second image of class c) this is exactly eq. 2, a softmax over
the C classes; with several images of a class, each positive gets its own term against the
other-class negatives, averaged per anchor. An anchor whose batch holds no other class gives 0.

Unsupervised similarity loss (eq. 3), `SimilarityLoss()`: positives only, no negatives

    L_u = -E_u K(z1_u, z2_u)

(in [-1, 1]; collapses alone, which the paper and its table 4 note: eq. 2 holds it in place).

Full objective (eq. 5), `SemiSupervisedClassificationLoss(lambda_s=1, lambda_u=0.2, temperature=0.2)`:

    L = CE(logits, y) + lambda_s L_s + lambda_u L_u

Under DDP the view-2 keys of eq. 2 (and their labels) are gathered from every rank with
`gather_with_grad`, so negatives come from the global batch, as in `marsedge.ssl.contrastive`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from marsedge.ssl.contrastive import gather_no_grad, gather_with_grad


class InterClassContrastiveLoss(nn.Module):
    """Eq. 2 (see the module docstring): `loss(z1, z2, labels)` with z1, z2 N x D and labels N."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        keys = gather_with_grad(F.normalize(z2.float(), dim=1))
        key_labels = gather_no_grad(labels)
        logits = F.normalize(z1.float(), dim=1) @ keys.T / self.temperature  # N x M
        positive = labels[:, None] == key_labels[None, :]
        # log sum over the negatives of each anchor; positives are masked with a finite floor
        # (exp(-1e4) = 0, logits are at most 1/t) so an anchor without negatives has a finite gradient
        neg_lse = torch.logsumexp(logits.masked_fill(positive, -1e4), dim=1, keepdim=True)
        # -log(e^p / (e^p + sum_neg)) = log(1 + exp(neg_lse - p)) = softplus(neg_lse - p)
        per_pair = F.softplus(neg_lse - logits)
        per_pair = torch.where(positive, per_pair, torch.zeros_like(per_pair))
        return (per_pair.sum(1) / positive.sum(1).clamp(min=1)).mean()


class SimilarityLoss(nn.Module):
    """Eq. 3: minus the mean cosine similarity of the two views of each unlabelled image."""

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return -F.cosine_similarity(z1.float(), z2.float(), dim=1).mean()


class SemiSupervisedClassificationLoss(nn.Module):
    """Eq. 5: CE + lambda_s * eq. 2 + lambda_u * eq. 3. A stream whose lambda is 0 (or whose inputs
    are None) is left out, so the same class gives CE alone and CE + eq. 2.

    Returns (total, parts) with parts the unweighted terms {"ce", "inter_class", "similarity"}."""

    def __init__(self, lambda_s: float = 1.0, lambda_u: float = 0.2, temperature: float = 0.2) -> None:
        super().__init__()
        self.lambda_s, self.lambda_u = lambda_s, lambda_u
        self.inter_class = InterClassContrastiveLoss(temperature)
        self.similarity = SimilarityLoss()

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        s_views: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        u_views: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """s_views = (z1, z2, labels of the eq. 2 pairs); u_views = (z1_u, z2_u)."""
        ce = F.cross_entropy(logits.float(), labels)
        total, parts = ce, {"ce": ce.detach()}
        if self.lambda_s and s_views is not None:
            ls = self.inter_class(*s_views)
            total = total + self.lambda_s * ls
            parts["inter_class"] = ls.detach()
        if self.lambda_u and u_views is not None:
            lu = self.similarity(*u_views)
            total = total + self.lambda_u * lu
            parts["similarity"] = lu.detach()
        return total, parts
