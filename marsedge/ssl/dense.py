"""Dense contrastive loss for pretraining (DenseCL, Wang et al. 2021), in-batch like our NT-Xent.

DenseCL contrasts every location of a view's feature map with its corresponding location in the
other view. It uses a momentum encoder and a queue of pooled keys; this version keeps SimCLR's
shape instead (one encoder, gradients through both views, negatives from the batch), so it sits
beside `marsedge.ssl.contrastive.NTXentLoss` and the pretrain mode combines the two:

    total = (1 - lambda) * NT-Xent(global projections) + lambda * DenseContrastiveLoss(...)

The correspondence between the views comes from the backbone's feature maps, not from the crop
geometry, as in DenseCL: location r of view a is matched with the location of view b whose
backbone feature is the most similar.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from marsedge.ssl.contrastive import _distributed, gather_with_grad


def dense_correspondence(f_a: torch.Tensor, f_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For backbone maps f_a (N x C x h_a x w_a) and f_b (N x C x h_b x w_b) of the same N images:
    (a_to_b, b_to_a), a_to_b[i, r] = argmax_s cos(f_a[i, :, r], f_b[i, :, s]) over the flattened
    locations (N x h_a*w_a), and b_to_a the same from b's side (N x h_b*w_b). No gradient: the
    argmax is not differentiable, and DenseCL computes it on detached features."""
    with torch.no_grad():
        a = F.normalize(f_a.detach().float().flatten(2), dim=1)
        b = F.normalize(f_b.detach().float().flatten(2), dim=1)
        sim = a.transpose(1, 2) @ b  # N x L_a x L_b
        return sim.argmax(dim=2), sim.argmax(dim=1)


class DenseContrastiveLoss(nn.Module):
    """DenseCL's dense InfoNCE with in-batch negatives, symmetrised over the two views.

    Inputs, for the N images of this process: the dense projections q_a, q_b (N x D x h x w, the
    two views' maps after the dense projection head) and the backbone maps f_a, f_b (N x C x h x w,
    only used to find the correspondence). With every vector L2-normalised:

        s*(r)   = argmax_s cos(f_a_i[r], f_b_i[s])                     (no gradient)
        k_j^v   = normalise(mean_r q~_j^v[r])   v in {a, b}             (q~: the unnormalised map)
        K_i     = {k_j^a, k_j^b : j != i, j over the global batch}

        l_i(r)  = -log  exp(q_a_i[r] . q_b_i[s*(r)] / t)
                        / (exp(q_a_i[r] . q_b_i[s*(r)] / t) + sum_{k in K_i} exp(q_a_i[r] . k / t))

        L_{a->b} = 1/(N L_a) sum_i sum_r l_i(r),     L_{b->a} the same with a and b swapped,
        loss     = (L_{a->b} + L_{b->a}) / 2

    t is the temperature; K_i is the in-batch stand-in for DenseCL's queue of pooled dense keys.
    Under DDP the pooled keys of every rank are negatives (gathered with `gather_with_grad`), and
    the mean is over this rank's images, which DDP's gradient average turns into the global mean.
    With one image in the global batch K_i is empty and the loss is 0.

    `forward` returns the loss; `terms` also returns the mean positive agreement q . t+ (no
    gradient), which rises as the matched locations' projections align.
    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def terms(self, q_a: torch.Tensor, q_b: torch.Tensor, f_a: torch.Tensor,
              f_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, mean positive cosine) for one batch; see the class docstring."""
        if q_a.ndim != 4 or q_b.ndim != 4 or q_a.shape[:2] != q_b.shape[:2]:
            raise ValueError(f"q_a and q_b must be N x D x h x w with the same N and D, got "
                             f"{tuple(q_a.shape)} and {tuple(q_b.shape)}")
        if (f_a.shape[0], *f_a.shape[2:]) != (q_a.shape[0], *q_a.shape[2:]) or \
                (f_b.shape[0], *f_b.shape[2:]) != (q_b.shape[0], *q_b.shape[2:]):
            raise ValueError(f"backbone maps {tuple(f_a.shape)}, {tuple(f_b.shape)} must have the N, h, w "
                             f"of the projections {tuple(q_a.shape)}, {tuple(q_b.shape)}")
        a_to_b, b_to_a = dense_correspondence(f_a, f_b)
        raw_a, raw_b = q_a.float().flatten(2), q_b.float().flatten(2)  # N x D x L
        pooled_a = F.normalize(raw_a.mean(dim=2), dim=1)
        pooled_b = F.normalize(raw_b.mean(dim=2), dim=1)
        gathered = self.gather_distributed and _distributed()
        if gathered:
            keys = torch.cat([gather_with_grad(pooled_a), gather_with_grad(pooled_b)])
        else:
            keys = torch.cat([pooled_a, pooled_b])
        n, n_keys = q_a.shape[0], keys.shape[0] // 2
        offset = dist.get_rank() * n if gathered else 0
        own = torch.zeros(n, 2 * n_keys, dtype=torch.bool, device=q_a.device)
        rows = torch.arange(n, device=q_a.device)
        own[rows, rows + offset] = True  # an image's own pooled keys are not its negatives
        own[rows, rows + offset + n_keys] = True
        q_a, q_b = F.normalize(raw_a, dim=1), F.normalize(raw_b, dim=1)
        loss_ab, cos_ab = self._one_way(q_a, q_b, a_to_b, keys, own)
        loss_ba, cos_ba = self._one_way(q_b, q_a, b_to_a, keys, own)
        return (loss_ab + loss_ba) / 2, (cos_ab + cos_ba) / 2

    def _one_way(self, q: torch.Tensor, t: torch.Tensor, match: torch.Tensor, keys: torch.Tensor,
                 own: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean l_i(r) over the N x L anchors q (N x D x L) with positives t[i, :, match[i, r]]."""
        positives = t.gather(2, match.unsqueeze(1).expand(-1, t.shape[1], -1))  # N x D x L
        pos = (q * positives).sum(dim=1)  # N x L
        neg = torch.einsum("ndl,kd->nlk", q, keys).masked_fill(own.unsqueeze(1), float("-inf"))
        logits = torch.cat([pos.unsqueeze(2), neg], dim=2) / self.temperature
        loss = -logits.log_softmax(dim=2)[..., 0].mean()
        return loss, pos.detach().mean()

    def forward(self, q_a: torch.Tensor, q_b: torch.Tensor, f_a: torch.Tensor,
                f_b: torch.Tensor) -> torch.Tensor:
        return self.terms(q_a, q_b, f_a, f_b)[0]
