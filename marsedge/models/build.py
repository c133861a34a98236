"""The model registry: any segmentation model from a `ModelConfig` (or its dict in YAML).

    model:
      backbone: r101_2x_sk1     # r{depth}_{width}x_sk{0|1} or mnv2_{width}
      head: deeplabv3           # aspp_seed | deeplabv3 | deeplabv3plus | linear
      output_stride: 16         # 32, 16 or 8 (dilation replaces stride)
      num_classes: 6
      in_channels: 1            # 1 = greyscale NAVCAM, 3 = colour
      head_channels: 256
      separable: false          # depthwise-separable 3x3 convs in the head
      stem_pool_padding: torch  # ResNet stem max pool: torch (symmetric) | tf_same (SimCLRv2's TF weights)

A name that is not registered fails naming the config key, the nearest valid name and the list.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from marsedge import config
from marsedge.errors import ConfigError
from marsedge.models.heads import SEGMENTATION_HEADS
from marsedge.models.mobilenetv2 import MobileNetV2
from marsedge.models.resnet import STAGE_BLOCKS, STEM_POOLS, ResNet

OUTPUT_STRIDES = (8, 16, 32)
RESNET_WIDTHS = ("0.25", "0.5", "1", "2", "3")
MOBILENET_WIDTHS = ("1.0", "0.75", "0.5", "0.35")


@dataclass
class ModelConfig:
    backbone: str = "mnv2_1.0"
    head: str = "deeplabv3plus"
    output_stride: int = 16
    num_classes: int = 6
    in_channels: int = 1
    head_channels: int = 256
    separable: bool = False
    # a checkpoint written before this field existed has none: it loads as "torch", its old behaviour
    stem_pool_padding: Literal["torch", "tf_same"] = "torch"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Checked like every config: an unknown or ill-typed key fails naming `model.<key>`."""
        return config.from_dict(cls, data, prefix="model")


BackboneFactory = Callable[..., nn.Module]


def _resnet_registry() -> dict[str, BackboneFactory]:
    return {
        f"r{depth}_{width}x_sk{sk}": functools.partial(ResNet, depth, float(width), bool(sk))
        for depth in STAGE_BLOCKS
        for width in RESNET_WIDTHS
        for sk in (0, 1)
    }


BACKBONES: dict[str, BackboneFactory] = {
    **_resnet_registry(),
    **{f"mnv2_{width}": functools.partial(MobileNetV2, float(width)) for width in MOBILENET_WIDTHS},
}
HEADS = SEGMENTATION_HEADS


def _check_name(kind: str, name: str, valid: dict) -> None:
    if name in valid:
        return
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"model.{kind}: unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}")


def _check_value(key: str, value: int, valid: tuple[int, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"model.{key} must be one of {list(valid)}, got {value!r}")


def build_backbone(name: str, output_stride: int = 32, in_channels: int = 1,
                   stem_pool_padding: str = "torch") -> nn.Module:
    """A backbone body returning `dict[str, Tensor]` of stage features; has `.out_channels` and `.strides`.

    `stem_pool_padding` only exists for ResNets (MobileNetV2 has no stem max pool): "tf_same" on
    another backbone is refused rather than silently meaningless.
    """
    _check_name("backbone", name, BACKBONES)
    _check_value("output_stride", output_stride, OUTPUT_STRIDES)
    _check_value("in_channels", in_channels, (1, 3))
    if stem_pool_padding not in STEM_POOLS:
        raise ConfigError(f"model.stem_pool_padding must be one of {list(STEM_POOLS)}, "
                          f"got {stem_pool_padding!r}")
    factory = BACKBONES[name]
    options = {"in_channels": in_channels, "output_stride": output_stride}
    if isinstance(factory, functools.partial) and factory.func is ResNet:
        options["stem_pool_padding"] = stem_pool_padding
    elif stem_pool_padding != "torch":
        raise ConfigError(f"model.stem_pool_padding: {stem_pool_padding!r} applies to ResNet backbones only, "
                          f"{name!r} has no stem max pool")
    backbone = factory(**options)
    backbone.name = name
    return backbone


class SegmentationModel(nn.Module):
    """Backbone + segmentation head; logits come back at the input resolution."""

    def __init__(self, backbone: nn.Module, head: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = config

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits N,K,H,W and every intermediate map: backbone stages, `low`, `out` and `head`."""
        feats = self.backbone(x)
        logits, head_features = self.head(feats)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits, {**feats, "head": head_features}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


def build_model(cfg: ModelConfig | dict) -> SegmentationModel:
    """Build the segmentation model a config describes (freshly initialised weights)."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    _check_name("head", cfg.head, HEADS)
    if cfg.num_classes < 1:
        raise ConfigError(f"model.num_classes must be positive, got {cfg.num_classes}")
    backbone = build_backbone(cfg.backbone, cfg.output_stride, cfg.in_channels, cfg.stem_pool_padding)
    head = HEADS[cfg.head](backbone.out_channels, cfg.num_classes, cfg.head_channels, cfg.output_stride,
                           cfg.separable)
    return SegmentationModel(backbone, head, cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
