"""ResNets as SimCLRv2 defines them: depth, width multiplier and optional selective kernels (SK).

Plain (`sk0`): exactly torchvision's ResNet (7x7 stem, strided 1x1 projection shortcuts, stride on
the 3x3 conv of the bottleneck), so r50_1x_sk0 / r101_1x_sk0 have torchvision's parameter counts.

With SK (`sk1`, SimCLRv2's `sk_ratio=0.0625`), three changes (google-research/simclr resnet.py):
  - the stem is three 3x3 convs (width/2, width/2, width) instead of one 7x7 conv;
  - projection shortcuts are ResNet-D: 2x2 average pooling, then a stride-1 1x1 conv and BN;
  - the bottleneck's 3x3 conv is a SelectiveKernel conv (below).
Basic-block depths (18, 34) follow SimCLR's residual block, which has no SK conv: there `sk1`
means the deep stem and ResNet-D shortcuts only. Depth 26 is a bottleneck net with (2, 2, 2, 2)
blocks (timm's resnet26), small enough for the CPU demo teacher.

The stem's 3x3/2 max pool pads like PyTorch (`torch`: one -inf row/column on each side) or like
TensorFlow's 'SAME' (`tf_same`: 0 before and 1 after on an even-sized map, `TFSameMaxPool`), which
SimCLRv2's TF release used: weights converted from it give the TF network's features only with
`tf_same` (`marsedge models import --format simclrv2` records it in the model config).

Output stride 16 or 8 replaces the stride of the last one or two stages by dilation, as
torchvision's `replace_stride_with_dilation` does. Layer names follow torchvision (`layer1.0.conv1`,
`downsample.0`) so its checkpoints import by renaming the stem only (marsedge.models.importers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SK_RATIO = 0.0625  # SimCLRv2: attention width = channels * sk_ratio ...
SK_MIN_DIM = 32  # ... but at least 32
STAGE_BLOCKS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    26: ("bottleneck", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# which of layer2..layer4 trade their stride for dilation at each output stride
DILATE_STAGES = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class SelectiveKernel(nn.Module):
    """SimCLRv2's SK conv: two 3x3 paths mixed per channel by attention from global context.

        a, b = split(relu(bn(conv3x3(x) -> 2C channels)))      two paths of C channels
        s    = mean_hw(a + b)                                  global context, N x C x 1 x 1
        m    = fc2(relu(fc_bn(fc1(s))))                        C -> max(32, C * 0.0625) -> 2C
        wa, wb = softmax over the two paths of split(m)
        out  = wa * a + wb * b
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        mid = max(int(cout * SK_RATIO), SK_MIN_DIM)
        self.conv = conv3x3(cin, 2 * cout, stride, dilation)
        self.bn = nn.BatchNorm2d(2 * cout)
        self.fc1 = conv1x1(cout, mid)
        self.fc_bn = nn.BatchNorm2d(mid)
        self.fc2 = conv1x1(mid, 2 * cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = torch.stack(F.relu(self.bn(self.conv(x))).chunk(2, dim=1))  # 2, N, C, H, W
        context = paths.sum(dim=0).mean(dim=(2, 3), keepdim=True)
        logits = self.fc2(F.relu(self.fc_bn(self.fc1(context))))
        weights = torch.stack(logits.chunk(2, dim=1)).softmax(dim=0)  # 2, N, C, 1, 1
        return (paths * weights).sum(dim=0)


class ResNetDPool(nn.Module):
    """The 2x2 average pooling of SimCLRv2's ResNet-D shortcut, with TensorFlow's padding rules.

    Stride 2: one zero row/column padded at the end, then VALID pooling (the pad counts; it is
    never read for even sizes). Stride 1 (the first stage, or a stage dilated instead of strided):
    TF 'SAME' pooling, which pads at the end and leaves the padding out of the mean.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(F.pad(x, (0, 1, 0, 1)), 2, self.stride)
        if self.stride == 2:
            return pooled
        ones = torch.ones_like(x[:1, :1])
        return pooled / F.avg_pool2d(F.pad(ones, (0, 1, 0, 1)), 2, 1)


class TFSameMaxPool(nn.Module):
    """Max pooling with TensorFlow's 'SAME' padding: the output is ceil(size / stride) and the
    padding total max((out - 1) * stride + kernel - size, 0) goes floor(half) before, the rest after
    (3x3/2 on an even map: 0 before, 1 after; PyTorch's MaxPool2d(3, 2, 1) pads 1 on both sides)."""

    def __init__(self, kernel: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def _pads(self, size: int) -> tuple[int, int]:
        out = -(-size // self.stride)
        total = max((out - 1) * self.stride + self.kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


STEM_POOLS = {"torch": lambda: nn.MaxPool2d(3, 2, 1), "tf_same": lambda: TFSameMaxPool(3, 2)}


def projection_shortcut(cin: int, cout: int, stride: int, resnet_d: bool) -> nn.Sequential:
    """Shortcut of a stage's first block: strided 1x1 conv + BN, or (ResNet-D) pool, 1x1 conv, BN."""
    if resnet_d:
        return nn.Sequential(ResNetDPool(stride), conv1x1(cin, cout), nn.BatchNorm2d(cout))
    return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int = 1, sk: bool = False, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride, first_dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided; SK conv when `sk`), 1x1 expand x4, plus the shortcut."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int = 1, sk: bool = False, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        if sk:
            self.sk = SelectiveKernel(planes, planes, stride, first_dilation)
        else:
            self.conv2 = conv3x3(planes, planes, stride, first_dilation)
            self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.sk(out) if hasattr(self, "sk") else F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Stem(nn.Module):
    """7x7/2 conv + BN + ReLU, or (SK nets) three 3x3 convs of width/2, width/2, width, the first strided."""

    def __init__(self, in_channels: int, channels: int, deep: bool) -> None:
        super().__init__()
        self.deep = deep
        if deep:
            half = channels // 2
            self.conv1 = conv3x3(in_channels, half, stride=2)
            self.bn1 = nn.BatchNorm2d(half)
            self.conv2 = conv3x3(half, half)
            self.bn2 = nn.BatchNorm2d(half)
            self.conv3 = conv3x3(half, channels)
            self.bn3 = nn.BatchNorm2d(channels)
        else:
            self.conv1 = nn.Conv2d(in_channels, channels, 7, 2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.deep:
            x = F.relu(self.bn2(self.conv2(x)))
            x = F.relu(self.bn3(self.conv3(x)))
        return x


class ResNet(nn.Module):
    """A ResNet body returning named stage features (no classifier).

    Features: `stem` (stride 2), `layer1` (4), `layer2` (8), `layer3` (16 or 8 when dilated),
    `layer4` (32, 16 or 8); `low` aliases layer1 (DeepLabv3+'s skip) and `out` aliases layer4.
    """

    def __init__(self, depth: int, width: float = 1.0, sk: bool = False, in_channels: int = 1,
                 output_stride: int = 32, stem_pool_padding: str = "torch") -> None:
        super().__init__()
        if stem_pool_padding not in STEM_POOLS:
            raise ValueError(f"stem_pool_padding must be one of {list(STEM_POOLS)}, "
                             f"got {stem_pool_padding!r}")
        kind, counts = STAGE_BLOCKS[depth]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        base = int(64 * width)
        self.stem = Stem(in_channels, base, deep=sk)
        self.maxpool = STEM_POOLS[stem_pool_padding]()
        self.out_channels = {"stem": base}
        self.strides = {"stem": 2}
        cin, stride_now, dilation = base, 4, 1
        dilate_stages = (False, *DILATE_STAGES[output_stride])
        for index, (count, dilate) in enumerate(zip(counts, dilate_stages, strict=True)):
            stride = 1 if index == 0 else 2
            first_dilation = dilation
            if dilate:
                dilation, stride = dilation * stride, 1
            planes = base * 2**index
            stage, cin = self._make_stage(block, cin, planes, count, stride, dilation, first_dilation, sk)
            name = f"layer{index + 1}"
            self.add_module(name, stage)
            stride_now *= stride
            self.out_channels[name], self.strides[name] = cin, stride_now
        for alias, name in (("low", "layer1"), ("out", "layer4")):
            self.out_channels[alias], self.strides[alias] = self.out_channels[name], self.strides[name]
        self._init_weights()

    @staticmethod
    def _make_stage(block: type[nn.Module], cin: int, planes: int, count: int, stride: int, dilation: int,
                    first_dilation: int, sk: bool) -> tuple[nn.Sequential, int]:
        cout = planes * block.expansion
        downsample = None
        if stride != 1 or cin != cout:
            downsample = projection_shortcut(cin, cout, stride, resnet_d=sk)
        blocks = [block(cin, planes, stride, dilation, first_dilation, sk, downsample)]
        blocks += [block(cout, planes, 1, dilation, dilation, sk) for _ in range(count - 1)]
        return nn.Sequential(*blocks), cout

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # SimCLRv2 starts every residual branch at zero (its last BN has gamma 0): blocks begin as identity
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = {"stem": self.stem(x)}
        x = self.maxpool(feats["stem"])
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            feats[name] = x
        feats["low"], feats["out"] = feats["layer1"], feats["layer4"]
        return feats
