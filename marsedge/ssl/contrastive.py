"""Contrastive losses for SimCLR pretraining: NT-Xent and its cluster-aware variant.

Both losses take the projections of two views of the same N frames, `z_a` and `z_b` (N x D), and
score each of the 2N views against every other view of the (global) batch:

    l_i = -log  exp(sim(z_i, z_j) / t)  /  sum_{k != i, k kept} exp(sim(z_i, z_k) / t)

with sim the cosine similarity, j the other view of i's frame (the positive) and t the
temperature. Plain NT-Xent keeps every k != i (the papers' eq. 1). The cluster-aware loss (the
homogeneous-Mars paper) knows each frame's cluster id and treats views of other frames in i's
cluster in one of two ways (`cluster_mode`), because the paper says both:

- `eliminate` (eq. 2, the default): they leave the denominator; they are probably the same terrain,
  i.e. false negatives. The positive j always stays in the denominator (the literal eq. 2 would also
  drop j, making the loss unbounded below; see `_negative_mask`).
- `attract` (the paper's text, 4.2: "we define positive view pairs as views which came from the same
  source image or cluster"): they become positives, scored like SupCon's L_out (Khosla et al. 2020),
  the mean over i's positives P(i) of the log-probability against every k != i:

      l_i = -1/|P(i)| sum_{p in P(i)} log  exp(sim(z_i, z_p) / t)  /  sum_{k != i} exp(sim(z_i, z_k) / t)

With all cluster ids distinct both modes equal plain NT-Xent.

Across processes the negatives come from every rank: the embeddings are gathered with
`gather_with_grad`, whose backward all-reduces the gradient. The usual pitfall is
`torch.distributed.all_gather`, which returns tensors without autograd history: the loss then only
reaches the local slice through the local anchors, and the gradient that other ranks' anchors send
to this rank's embeddings is silently dropped. tests/test_ssl_ddp.py checks the equality with a
single process holding the whole batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in the forward pass; in the backward pass every rank receives the SUM over ranks of
    the gradient with respect to its own slice (each rank's loss used every slice), then keeps its
    slice. Together with DDP's gradient average this yields the gradient of the global mean loss."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (same shape on every rank) from all ranks along dim 0, keeping gradients.

    Without an initialised process group (or with one process) it returns `x` unchanged.
    """
    return _GatherWithGrad.apply(x) if _distributed() else x


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks without gradients (cluster ids, indices)."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def _view_indices(
    n_local: int, n_keys: int, offset: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key column of each local anchor (views a then b) and of its positive.

    Keys are laid out [view a of every key frame | view b of every key frame] (n_keys frames); this
    rank's frames start at `offset` inside each half (rank * n_local when gathered, else 0).
    """
    frames = torch.arange(n_local, device=device) + offset
    self_col = torch.cat([frames, frames + n_keys])
    positive_col = torch.cat([frames + n_keys, frames])
    return self_col, positive_col


def _negative_mask(
    clusters_anchor: torch.Tensor, clusters_keys: torch.Tensor, positive_col: torch.Tensor
) -> torch.Tensor:
    """True where a key is a same-cluster negative of an anchor and must leave the denominator.

    The positive (the anchor's other view, same frame so same cluster) is kept: removing it would
    make the loss -log(e^pos / sum(others)), unbounded below, and differ from NT-Xent even when
    every cluster id is distinct.
    """
    same = clusters_anchor[:, None] == clusters_keys[None, :]
    rows = torch.arange(len(positive_col), device=same.device)
    same[rows, positive_col] = False
    return same


CLUSTER_MODES = ("eliminate", "attract")


def _attract_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over anchors of -mean_{p in P(i)} log softmax(logits_i)[p] (self already at -inf)."""
    log_prob = logits.log_softmax(dim=1)
    per_anchor = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(per_anchor / positives.sum(dim=1)).mean()


def nt_xent(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    temperature: float,
    clusters: torch.Tensor | None = None,
    gather: bool = True,
    cluster_mode: str = "eliminate",
) -> torch.Tensor:
    """Mean NT-Xent over this rank's 2N anchors (see the module docstring)."""
    if cluster_mode not in CLUSTER_MODES:
        raise ValueError(f"cluster_mode must be one of {list(CLUSTER_MODES)}, got {cluster_mode!r}")
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"z_a and z_b must both be N x D, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    anchors = torch.cat([z_a, z_b])
    gathered = gather and _distributed()
    if gathered:
        keys = torch.cat([gather_with_grad(z_a), gather_with_grad(z_b)])
    else:
        keys = anchors
    n_local, n_keys = z_a.shape[0], keys.shape[0] // 2
    offset = dist.get_rank() * n_local if gathered else 0
    self_col, positive_col = _view_indices(n_local, n_keys, offset, z_a.device)

    logits = anchors @ keys.T / temperature
    is_self = F.one_hot(self_col, num_classes=keys.shape[0]).bool()
    logits = logits.masked_fill(is_self, float("-inf"))  # a view is never its own negative (k != i)
    if clusters is not None:
        c_local = clusters.to(z_a.device).long()
        c_keys_half = gather_no_grad(c_local) if gathered else c_local
        c_anchor, c_keys = torch.cat([c_local, c_local]), torch.cat([c_keys_half, c_keys_half])
        same_cluster = _negative_mask(c_anchor, c_keys, positive_col) & ~is_self
        if cluster_mode == "attract":
            return _attract_loss(logits, same_cluster | F.one_hot(positive_col, keys.shape[0]).bool())
        logits = logits.masked_fill(same_cluster, float("-inf"))
    return F.cross_entropy(logits, positive_col)


class NTXentLoss(nn.Module):
    """SimCLR's normalised temperature-scaled cross entropy (eq. 1):

        l_i = -log exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t)

    averaged over the 2N views; negatives gathered from every rank when `gather_distributed`.
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return nt_xent(z_a, z_b, self.temperature, gather=self.gather_distributed)


class ClusterAwareNTXentLoss(NTXentLoss):
    """Cluster-aware NT-Xent (the homogeneous-Mars paper), c the frame's cluster id (`marsedge cluster`).

    `cluster_mode="eliminate"` (eq. 2): views of other frames in i's cluster leave the denominator,

        l_i = -log exp(sim(z_i, z_j)/t) / sum_{k != i, c_k != c_i or k = j} exp(sim(z_i, z_k)/t)

    `cluster_mode="attract"` (the text of 4.2): they become positives, P(i) = {j} + {k: c_k = c_i, k != i},

        l_i = -1/|P(i)| sum_{p in P(i)} log exp(sim(z_i, z_p)/t) / sum_{k != i} exp(sim(z_i, z_k)/t)

    Both equal NT-Xent when every frame has its own cluster.
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True,
                 cluster_mode: str = "eliminate") -> None:
        super().__init__(temperature, gather_distributed)
        if cluster_mode not in CLUSTER_MODES:
            raise ValueError(f"cluster_mode must be one of {list(CLUSTER_MODES)}, got {cluster_mode!r}")
        self.cluster_mode = cluster_mode

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor, clusters: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if clusters.shape != (z_a.shape[0],):
            raise ValueError(f"clusters must have shape ({z_a.shape[0]},), got {tuple(clusters.shape)}")
        return nt_xent(z_a, z_b, self.temperature, clusters=clusters, gather=self.gather_distributed,
                       cluster_mode=self.cluster_mode)
