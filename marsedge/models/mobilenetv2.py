"""MobileNetV2 (Sandler et al. 2018) with a width multiplier: the student backbone.

Layers, channel rounding and names follow torchvision's `mobilenet_v2` (`features.N...`), so at
width 1.0 with its 1000-class classifier the parameter count is torchvision's exactly, and its
checkpoints import unchanged apart from the first conv (marsedge.models.importers).

Stages are named by stride so that they line up with the ResNets' for feature distillation:
`stem` = features[0] (stride 2), `layer1` = features[1:4] (4), `layer2` = features[4:7] (8),
`layer3` = features[7:14] (16), `layer4` = features[14:19] (32, ending in the 1x1 conv to 1280).
Output stride 16 or 8 trades the stride of the later inverted residual blocks for dilation of
their depthwise convs.
"""

from __future__ import annotations

import torch
from torch import nn

# expand ratio t, output channels c, repeats n, first stride s (the paper's Table 2)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STAGE_ENDS = {"stem": 1, "layer1": 4, "layer2": 7, "layer3": 14, "layer4": 19}  # exclusive end index


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8 without dropping more than 10% (torchvision's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1) -> None:
        padding = (kernel - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden, dilation=dilation),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 body returning named stage features (`low` = layer1, `out` = layer4)."""

    def __init__(self, width: float = 1.0, in_channels: int = 1, output_stride: int = 32) -> None:
        super().__init__()
        cin = make_divisible(32 * width)
        last = make_divisible(1280 * max(1.0, width))
        features: list[nn.Module] = [ConvBNReLU6(in_channels, cin, stride=2)]
        stride_now, dilation = 2, 1
        self.strides = {"stem": 2}
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            cout = make_divisible(c * width)
            for i in range(n):
                stride = s if i == 0 else 1
                block_dilation = dilation
                if stride > 1 and stride_now * stride > output_stride:
                    dilation, stride = dilation * stride, 1  # later blocks dilate; this one keeps its rate
                stride_now *= stride
                features.append(InvertedResidual(cin, cout, stride, t, block_dilation))
                cin = cout
                self._record_stride(len(features), stride_now)
        features.append(ConvBNReLU6(cin, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.out_channels = {name: self._channels_at(end) for name, end in STAGE_ENDS.items()}
        self.strides["layer4"] = stride_now
        for alias, name in (("low", "layer1"), ("out", "layer4")):
            self.out_channels[alias], self.strides[alias] = self.out_channels[name], self.strides[name]
        self._init_weights()

    def _record_stride(self, end: int, stride: int) -> None:
        for name, stage_end in STAGE_ENDS.items():
            if stage_end == end:
                self.strides[name] = stride

    def _channels_at(self, end: int) -> int:
        """Output channels of features[end - 1]: the last BatchNorm's width."""
        norms = [m for m in self.features[end - 1].modules() if isinstance(m, nn.BatchNorm2d)]
        return norms[-1].num_features

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        start = 0
        for name, end in STAGE_ENDS.items():
            for index in range(start, end):
                x = self.features[index](x)
            feats[name], start = x, end
        feats["low"], feats["out"] = feats["layer1"], feats["layer4"]
        return feats
