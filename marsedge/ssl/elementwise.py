"""Element-wise inter-class contrastive learning against class prototypes (the semi-supervised Mars
paper, sections 5.1-5.3): what mode `semisup` (marsedge.train.modes.semisup) adds to cross-entropy.

- `ClassMemoryBank`: C queues of length L (32); each step pushes, for every image of the batch and
  every class present in its map, the mean feature of that image's class-c elements (eq. 7's
  "the average of all features labeled c_i in the current f": f is one image's map); the class
  prototypes are the queue means m_c.
- `ElementwiseContrastiveLoss` (eq. 7): every labelled feature-map element f_i is pulled towards its
  class prototype and pushed from the others, the prototypes being those of the bank BEFORE this
  batch is enqueued (as in MoCo-style queues: an element is never scored against its own mean),

      L = -mean_i log  exp(cos(f_i, m_{c_i}) / t)  /  sum_c exp(cos(f_i, m_c) / t)     (t = 0.07)

  labels are downsampled (nearest) to the feature map (`downsample_labels`); ignore (255) elements
  do not take part.
- `pseudo_labels`: unlabelled pixels whose softmax confidence exceeds 0.9 take the predicted class;
  real labels are never overridden.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from marsedge.terrain import IGNORE_INDEX


class ClassMemoryBank:
    """Per-class FIFO queues of per-image class-mean features (the paper's memory bank M).

    `push(features, labels)` appends, for every image and every class with at least one labelled
    element in that image, the mean of those (detached, L2-normalised) features, image by image;
    under DDP every rank's per-image means are gathered first (rank order, then image order), so
    every rank holds the same bank. `prototypes()` returns the mean of each queue and a mask of the
    classes seen so far. `state_dict`/`load_state_dict` let the training loop checkpoint and resume
    it (it is an `extra_state` entry).
    """

    def __init__(self, num_classes: int, dim: int, length: int = 32) -> None:
        if length < 1:
            raise ValueError(f"memory bank length must be >= 1, got {length}")
        self.num_classes, self.dim, self.length = num_classes, dim, length
        self.queue = torch.zeros(num_classes, length, dim)
        self.filled = torch.zeros(num_classes, dtype=torch.long)  # entries in use, <= length
        self.head = torch.zeros(num_classes, dtype=torch.long)  # next slot to overwrite

    @torch.no_grad()
    def push(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """features: N x D x h x w with labels N x h x w (one map per image), or M x D with labels M
        (the elements of one image); labels: class ids, 255 ignored."""
        if features.ndim == 4:
            n = features.shape[0]
            image = torch.arange(n, device=labels.device).repeat_interleave(labels[0].numel())
            features = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
            labels = labels.reshape(-1)
        else:
            n, image = 1, torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device)
        keep = labels != IGNORE_INDEX
        feats = F.normalize(features[keep].detach().float(), dim=1)
        slot = image[keep] * self.num_classes + labels[keep].long()  # the (image, class) pair
        # summed where the features are: only N x C x D means travel to the CPU-held bank
        sums = torch.zeros(n * self.num_classes, self.dim, device=feats.device)
        sums = sums.index_add_(0, slot, feats).cpu()
        counts = torch.bincount(slot, minlength=n * self.num_classes).float().cpu()
        sums, counts = sums.view(n, self.num_classes, self.dim), counts.view(n, self.num_classes)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sums, counts = _all_gather_cpu(sums), _all_gather_cpu(counts)
        for i, c in torch.nonzero(counts).tolist():  # row-major: image by image, classes in order
            self.enqueue(c, sums[i, c] / counts[i, c])

    def enqueue(self, c: int, mean_feature: torch.Tensor) -> None:
        """Put one class-mean feature into class c's queue, dropping the oldest when full."""
        self.queue[c, self.head[c]] = mean_feature
        self.head[c] = (self.head[c] + 1) % self.length
        self.filled[c] = min(int(self.filled[c]) + 1, self.length)

    def prototypes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(C x D queue means, bool C mask of classes with at least one entry)."""
        seen = self.filled > 0
        means = self.queue.sum(dim=1) / self.filled.clamp(min=1)[:, None].float()
        return means, seen

    def state_dict(self) -> dict:
        return {"queue": self.queue.clone(), "filled": self.filled.clone(), "head": self.head.clone()}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["queue"].shape) != tuple(self.queue.shape):
            raise ValueError(f"memory bank shape {tuple(state['queue'].shape)} does not match "
                             f"{tuple(self.queue.shape)} (num_classes, length, dim)")
        self.queue = state["queue"].clone()
        self.filled, self.head = state["filled"].clone(), state["head"].clone()


def _all_gather_cpu(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a CPU tensor's rows from every rank, in rank order (through the backend's device
    for NCCL). Ranks may hold different row counts (a last, short batch): rows are zero-padded to
    the largest count for the collective, and zero rows (count 0) enqueue nothing."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
    rows = torch.tensor([t.shape[0]], device=device)
    dist.all_reduce(rows, op=dist.ReduceOp.MAX)
    padded = torch.zeros((int(rows), *t.shape[1:]), dtype=t.dtype, device=device)
    padded[: t.shape[0]] = t.to(device)
    parts = [torch.empty_like(padded) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, padded)
    return torch.cat(parts).cpu()


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x H x W class ids -> N x h x w by nearest neighbour (ids, and 255 ignore, stay ids)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


@torch.no_grad()
def pseudo_labels(logits: torch.Tensor, labels: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """The paper's merged label y-bar: real labels kept; ignore pixels whose softmax confidence is
    above `threshold` take the predicted class; the rest stay 255.

    logits: N x K x H x W; labels: N x H x W (255 = unlabelled). Returns a new N x H x W tensor.
    """
    confidence, predicted = logits.float().softmax(dim=1).max(dim=1)
    fill = (labels == IGNORE_INDEX) & (confidence > threshold)
    return torch.where(fill, predicted, labels)


class ElementwiseContrastiveLoss(nn.Module):
    """Element-wise inter-class contrastive loss against memory-bank prototypes (eq. 7):

        L = -mean_i log exp(cos(f_i, m_{c_i})/t) / sum_{c seen} exp(cos(f_i, m_c)/t)

    over feature-map elements with a label whose class is already in the bank. `forward` scores the
    elements against the bank as it stands, THEN enqueues this batch's per-image class means: the
    prototypes m-bar are history, so the very first batch (empty bank) gives a zero loss, and a
    class seen for the first time is left out until the next step. The bank holds no gradient.
    """

    def __init__(self, bank: ClassMemoryBank, temperature: float = 0.07) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.bank, self.temperature = bank, temperature

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """features: N x D x h x w; labels: N x h x w at the feature resolution (255 ignored)."""
        loss = self.score(features, labels)
        self.bank.push(features, labels)
        return loss

    def score(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. 7 against the bank's current prototypes, without touching the bank."""
        prototypes, seen = self.bank.prototypes()
        prototypes, seen = prototypes.to(features.device, features.dtype), seen.to(features.device)
        flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        ids = labels.reshape(-1)
        keep = (ids != IGNORE_INDEX) & seen[ids.clamp(max=self.bank.num_classes - 1)]
        if not keep.any():
            return features.sum() * 0.0  # nothing labelled (or an empty bank): a zero that keeps the graph
        logits = F.normalize(flat[keep], dim=1) @ F.normalize(prototypes, dim=1).T / self.temperature
        logits = logits.masked_fill(~seen[None, :], float("-inf"))
        return F.cross_entropy(logits, ids[keep].long())
