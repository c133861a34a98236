"""Task heads: segmentation heads over backbone features, the SimCLR projection MLP, DenseCL's dense
projection, a linear probe.

Every segmentation head takes the backbone's feature dict and returns `(logits, features)`:
logits at feature resolution (SegmentationModel resizes them to the input) and the feature map
the classifier reads (`head` in forward_features, used for feature distillation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BASE_RATES = (6, 12, 18)  # DeepLab's atrous rates at output stride 16


def atrous_rates(output_stride: int) -> tuple[int, ...]:
    """DeepLab's rates (6, 12, 18) at output stride 16, scaled so they cover the same image area."""
    return tuple(max(1, r * 16 // output_stride) for r in BASE_RATES)


class ConvBNReLU(nn.Sequential):
    """A 3x3 (or 1x1) conv + BN + ReLU; `separable` makes a 3x3 depthwise + BN + ReLU, 1x1 + BN + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, dilation: int = 1,
                 separable: bool = False) -> None:
        padding = (kernel - 1) // 2 * dilation
        if separable and kernel > 1:
            layers = [
                nn.Conv2d(cin, cin, kernel, padding=padding, dilation=dilation, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.ReLU(inplace=True),
                nn.Conv2d(cin, cout, 1, bias=False),
            ]
        else:
            layers = [nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False)]
        super().__init__(*layers, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average, 1x1 conv + ReLU, broadcast back to the map.

    It has a bias instead of BatchNorm: BN over a 1x1 map fails on a batch of one in training.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.conv(F.adaptive_avg_pool2d(x, 1)))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """DeepLabv3's atrous spatial pyramid: 1x1, three atrous 3x3, image pooling; concat; 1x1 projection."""

    def __init__(self, cin: int, channels: int, rates: tuple[int, ...], separable: bool = False) -> None:
        super().__init__()
        branches = [ConvBNReLU(cin, channels, kernel=1)]
        branches += [ConvBNReLU(cin, channels, dilation=r, separable=separable) for r in rates]
        branches.append(ImagePooling(cin, channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(ConvBNReLU(channels * len(branches), channels, kernel=1),
                                     nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class ASPPSeedHead(nn.Module):
    """The less-labels paper's atrous block: 3x3 convs at rates 6/12/18 (256 filters each, BN + ReLU),
    concatenated, then a 1x1 conv to the classes.

    The paper resizes the concatenation to the input before the 1x1 conv; a 1x1 conv commutes with
    bilinear resizing (both linear, the resize weights sum to one), so the classifier runs first on
    the small map and SegmentationModel resizes the logits: the same output, far less memory.
    """

    def __init__(self, in_channels: dict[str, int], num_classes: int, channels: int = 256,
                 output_stride: int = 16, separable: bool = False) -> None:
        super().__init__()
        cin = in_channels["out"]
        rates = atrous_rates(output_stride)
        self.branches = nn.ModuleList(
            ConvBNReLU(cin, channels, dilation=r, separable=separable) for r in rates)
        self.classifier = nn.Conv2d(channels * len(rates), num_classes, 1)

    def forward(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([branch(feats["out"]) for branch in self.branches], dim=1)
        return self.classifier(x), x


class DeepLabV3Head(nn.Module):
    """DeepLabv3 (Chen et al. 2017): ASPP, a 3x3 conv + BN + ReLU, a 1x1 classifier."""

    def __init__(self, in_channels: dict[str, int], num_classes: int, channels: int = 256,
                 output_stride: int = 16, separable: bool = False) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels["out"], channels, atrous_rates(output_stride), separable)
        self.conv = ConvBNReLU(channels, channels, separable=separable)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(self.aspp(feats["out"]))
        return self.classifier(x), x


class DeepLabV3PlusHead(nn.Module):
    """DeepLabv3+ (Chen et al. 2018): ASPP, upsampled to the stride-4 `low` features (reduced to 48
    channels), concatenated, two 3x3 convs, a 1x1 classifier. `separable` makes every 3x3 conv
    depthwise-separable (the student-friendly variant)."""

    LOW_CHANNELS = 48

    def __init__(self, in_channels: dict[str, int], num_classes: int, channels: int = 256,
                 output_stride: int = 16, separable: bool = False) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels["out"], channels, atrous_rates(output_stride), separable)
        self.reduce_low = ConvBNReLU(in_channels["low"], self.LOW_CHANNELS, kernel=1)
        self.decoder = nn.Sequential(
            ConvBNReLU(channels + self.LOW_CHANNELS, channels, separable=separable),
            ConvBNReLU(channels, channels, separable=separable),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.reduce_low(feats["low"])
        context = F.interpolate(self.aspp(feats["out"]), size=low.shape[-2:], mode="bilinear",
                                align_corners=False)
        x = self.decoder(torch.cat([context, low], dim=1))
        return self.classifier(x), x


class PixelLinearHead(nn.Module):
    """A linear probe for segmentation: one 1x1 conv on the final features (frozen-backbone evaluation)."""

    def __init__(self, in_channels: dict[str, int], num_classes: int, channels: int = 256,
                 output_stride: int = 16, separable: bool = False) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(in_channels["out"], num_classes, 1)

    def forward(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier(feats["out"]), feats["out"]


SEGMENTATION_HEADS: dict[str, type[nn.Module]] = {
    "aspp_seed": ASPPSeedHead,
    "deeplabv3": DeepLabV3Head,
    "deeplabv3plus": DeepLabV3PlusHead,
    "linear": PixelLinearHead,
}


class ProjectionMLP(nn.Module):
    """SimCLRv2's projection head g(.): `num_layers` x (Linear without bias, BatchNorm1d), ReLU between.

    Hidden layers keep the input width; the last maps to `out_dim` and its BN has no learnt shift
    (SimCLR's `center=False`: the bias stays zero). Layer indices match the widely used PyTorch
    conversion of SimCLRv2 checkpoints (`layers.0` linear, `layers.1` BN, `layers.2` ReLU, ...).
    `forward(h, upto=k)` returns the output of the first k layers (SimCLRv2 fine-tunes from the
    middle of the projection head).
    """

    def __init__(self, in_dim: int, out_dim: int = 128, num_layers: int = 3) -> None:
        super().__init__()
        if not 1 <= num_layers <= 3:
            raise ValueError(f"projection num_layers must be 1..3, got {num_layers}")
        layers: list[nn.Module] = []
        self.layer_ends: list[int] = []
        for index in range(num_layers):
            last = index == num_layers - 1
            dim = out_dim if last else in_dim
            layers += [nn.Linear(in_dim, dim, bias=False), nn.BatchNorm1d(dim)]
            if last:
                layers[-1].bias.requires_grad_(False)
            else:
                layers.append(nn.ReLU(inplace=True))
            self.layer_ends.append(len(layers))
        self.layers = nn.Sequential(*layers)
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.01)

    def forward(self, h: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        end = len(self.layers) if upto is None else self.layer_ends[upto - 1]
        return self.layers[:end](h)


class DenseProjection(nn.Sequential):
    """DenseCL's dense projection head: 1x1 conv, ReLU, 1x1 conv on a feature map (C x h x w ->
    out_dim x h x w), the per-location counterpart of a 2-layer projection MLP. No BatchNorm, as in
    DenseCL's neck. Keys: `0.*` (in -> hidden) and `2.*` (hidden -> out_dim)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> None:
        hidden = hidden_dim or in_dim  # DenseCL's hidden width equals the backbone's (2048 for R50)
        super().__init__(nn.Conv2d(in_dim, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_dim, 1))


class LinearProbe(nn.Module):
    """Classification linear probe: global average pooling of a feature map, then one Linear layer."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)) if x.dim() == 4 else x)
