"""The contrastive stream's head of mode `semisup` (`semisup.contrastive_head`): what maps the shared
backbone's features to the embedding f that the element-wise contrastive loss (eq. 7) scores.

- `independent_v3plus` (the semi-supervised Mars paper, Fig. 7 and section 5.3, the default): a head
  of its own, H_seg^s, a DeepLabv3+ head like the segmentation head H_seg (ASPP on `out`, decoder
  with the stride-4 `low` features) whose 1x1 output layer gives `embed_dim` (128) channels at
  stride 4. The two streams share the backbone only.
- `projection_1x1` (the cheaper variant marsedge had first): 1x1 conv + BN + ReLU + 1x1 conv on the
  backbone's final map, i.e. an embedding at the output stride (16). Far fewer MACs, 16x fewer
  elements per image; kept for CPU-sized runs (see benchmarks/semisup_heads.py for what it costs).

Every head takes the backbone's feature dict and returns N x embed_dim x h x w.
"""

from __future__ import annotations

import torch
from torch import nn

from marsedge.errors import ConfigError
from marsedge.models.heads import DeepLabV3PlusHead


class IndependentV3PlusHead(DeepLabV3PlusHead):
    """H_seg^s: a DeepLabv3+ head whose "classes" are the embed_dim embedding channels (stride 4)."""

    def __init__(self, in_channels: dict[str, int], embed_dim: int = 128, channels: int = 256,
                 output_stride: int = 16, separable: bool = False) -> None:
        super().__init__(in_channels, embed_dim, channels, output_stride, separable)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(feats)[0]


class Projection1x1Head(nn.Sequential):
    """1x1 conv + BN + ReLU + 1x1 conv on `out` (a Sequential, so runs of the first variant resume)."""

    def __init__(self, in_channels: dict[str, int], embed_dim: int = 128, channels: int = 256,
                 output_stride: int = 16, separable: bool = False) -> None:
        c = in_channels["out"]
        super().__init__(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                         nn.Conv2d(c, embed_dim, 1))

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(feats["out"])


CONTRASTIVE_HEADS: dict[str, type[nn.Module]] = {
    "independent_v3plus": IndependentV3PlusHead,
    "projection_1x1": Projection1x1Head,
}


def build_contrastive_head(name: str, in_channels: dict[str, int], embed_dim: int = 128, channels: int = 256,
                           output_stride: int = 16, separable: bool = False) -> nn.Module:
    """The registered head `name` (config key `semisup.contrastive_head`)."""
    if name not in CONTRASTIVE_HEADS:
        raise ConfigError(f"config key 'semisup.contrastive_head': unknown head {name!r}; "
                          f"valid: {', '.join(CONTRASTIVE_HEADS)}")
    return CONTRASTIVE_HEADS[name](in_channels, embed_dim, channels, output_stride, separable)
