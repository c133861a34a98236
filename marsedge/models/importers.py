"""Importers: foreign state dicts -> our backbone keys.

- torchvision ResNet (`conv1`, `bn1`, `layerN.i.*`, `fc`): our layers use torchvision's names, so only
  the stem is renamed (`conv1` -> `stem.conv1`) and the classifier dropped. Plain (sk0) nets only.
- torchvision MobileNetV2 (`features.N.*`, `classifier.1`): same names; the classifier is dropped.
- SimCLRv2 checkpoints converted to PyTorch by the widely used converter (Separius/SimCLRv2-Pytorch):
  `{'resnet': ..., 'head': ...}` with `net.0.*` (stem), `net.N.blocks.i.projection.*` (shortcut),
  `net.N.blocks.i.net.*` (residual branch; SK convs as `main_conv` / `mixing_conv`), `fc`; and the
  projection head as `layers.K.*`, which our ProjectionMLP uses unchanged.

A 3-channel first conv imported into a 1-channel model is summed over its input channels: a grey
image fed to it then gives exactly what the colour net gives for that image replicated three times.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from marsedge.errors import ModelError
from marsedge.models.resnet import Bottleneck, ResNet

FORMATS = ("torchvision", "simclrv2")

# our block sub-module -> the converter's, for plain and SK bottlenecks (BNs sit inside BatchNormRelu: `.0`)
_SIMCLR_BLOCK = {
    False: {"conv1": "net.0", "bn1": "net.1.0", "conv2": "net.2", "bn2": "net.3.0", "conv3": "net.4",
            "bn3": "net.5.0", "downsample.0": "projection.shortcut", "downsample.1": "projection.bn.0"},
    True: {"conv1": "net.0", "bn1": "net.1.0", "sk.conv": "net.2.main_conv.0",
           "sk.bn": "net.2.main_conv.1.0", "sk.fc1": "net.2.mixing_conv.0",
           "sk.fc_bn": "net.2.mixing_conv.1.0", "sk.fc2": "net.2.mixing_conv.2",
           "conv3": "net.3", "bn3": "net.4.0", "downsample.1": "projection.shortcut.2",
           "downsample.2": "projection.bn.0"},
}
# the converter's stem: Sequential(conv, BNReLU, conv, BNReLU, conv, BNReLU, maxpool), or
# (conv7x7, BNReLU, maxpool) without SK
_SIMCLR_STEM = {"conv1": "net.0.0", "bn1": "net.0.1.0", "conv2": "net.0.2", "bn2": "net.0.3.0",
                "conv3": "net.0.4", "bn3": "net.0.5.0"}


def first_conv_key(module: nn.Module) -> str | None:
    """State-dict key of the first Conv2d's weight (the one that sees the image); None without convs."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            return f"{name}.weight"
    return None


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-conv weight for `in_channels` inputs: 3 -> 1 sums the colour channels; 1 -> 3 splits it."""
    have = weight.shape[1]
    if have == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if have == 1:
        return weight.repeat(1, in_channels, 1, 1) / in_channels
    raise ModelError(f"cannot adapt a first conv with {have} input channels to {in_channels}")


def _finish(state_dict: dict[str, torch.Tensor], backbone: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Adapt the first conv, then check every key and shape against the backbone (names the key)."""
    state_dict = dict(state_dict)
    key = first_conv_key(backbone)
    if key is not None and key in state_dict:
        state_dict[key] = adapt_first_conv(state_dict[key], backbone.state_dict()[key].shape[1])
    expected = backbone.state_dict()
    for k in expected:  # checkpoints from older torch versions have no BN step counters
        if k.endswith("num_batches_tracked"):
            state_dict.setdefault(k, torch.zeros((), dtype=torch.long))
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        name = getattr(backbone, "name", type(backbone).__name__)
        raise ModelError(f"{source}: does not fit {name}: missing {missing[:4]} ({len(missing)}), "
                         f"unexpected {unexpected[:4]} ({len(unexpected)})")
    for k, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(expected[k].shape):
            raise ModelError(f"{source}: {k} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(expected[k].shape)}")
    return state_dict


def import_torchvision(state_dict: dict[str, torch.Tensor], backbone: nn.Module,
                       source: str = "torchvision state dict") -> dict[str, torch.Tensor]:
    """A torchvision ResNet or MobileNetV2 state dict as our backbone's state dict (classifier dropped)."""
    if isinstance(backbone, ResNet) and backbone.stem.deep:
        raise ModelError(f"{source}: torchvision ResNets have no SK / deep stem; use an _sk0 backbone")
    out = {}
    for key, tensor in state_dict.items():
        if key.startswith(("fc.", "classifier.")):
            continue
        if isinstance(backbone, ResNet) and key.startswith(("conv1.", "bn1.")):
            key = f"stem.{key}"
        out[key] = tensor
    return _finish(out, backbone, source)


def simclr_key_map(backbone: ResNet) -> dict[str, str]:
    """Our backbone key -> the SimCLRv2 converter's key, for every tensor of a bottleneck ResNet."""
    if not isinstance(backbone.layer1[0], Bottleneck):
        raise ModelError("SimCLRv2 checkpoints are bottleneck ResNets (depth 50/101/152)")
    sk = backbone.stem.deep
    mapping = {}
    for key in backbone.state_dict():
        module, _, param = key.rpartition(".")
        stem = re.fullmatch(r"stem\.(\w+)", module)
        block = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", module)
        if stem:
            theirs = _SIMCLR_STEM[stem.group(1)]
        elif block and block.group(3) in _SIMCLR_BLOCK[sk]:
            stage, index, sub = block.groups()
            theirs = f"net.{stage}.blocks.{index}.{_SIMCLR_BLOCK[sk][sub]}"
        else:
            raise ModelError(f"{key}: no SimCLRv2 counterpart (bottleneck ResNets only)")
        mapping[key] = f"{theirs}.{param}"
    return mapping


def import_simclr_v2(checkpoint: dict, backbone: ResNet, source: str = "SimCLRv2 checkpoint"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`{'resnet': ..., 'head': ...}` -> (our backbone state dict, ProjectionMLP state dict or {})."""
    if not isinstance(checkpoint, dict) or "resnet" not in checkpoint:
        raise ModelError(f"{source}: not a converted SimCLRv2 checkpoint (no 'resnet' key)")
    if not isinstance(backbone, ResNet):
        raise ModelError(f"{source}: SimCLRv2 weights need a ResNet backbone")
    theirs = checkpoint["resnet"]
    ours = {}
    for key, their_key in simclr_key_map(backbone).items():
        if their_key in theirs:
            ours[key] = theirs[their_key]
        elif not key.endswith("num_batches_tracked"):
            raise ModelError(f"{source}: missing {their_key} (for {key}); wrong depth, width or sk?")
    leftover = sorted(set(theirs) - set(simclr_key_map(backbone).values()) - {"fc.weight", "fc.bias"})
    if leftover:
        raise ModelError(f"{source}: unexpected keys {leftover[:4]} ({len(leftover)}); wrong backbone?")
    return _finish(ours, backbone, source), dict(checkpoint.get("head", {}))


def read_foreign(path: str | Path) -> dict:
    """A foreign weights file, read safely (weights_only); unwraps a {'state_dict': ...} wrapper."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        raise ModelError(f"{path}: cannot read weights safely ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    return data.get("state_dict", data) if "resnet" not in data else data


def import_file(path: str | Path, fmt: str, backbone: nn.Module) -> tuple[dict, dict]:
    """Read `path` in format `fmt` ("torchvision" or "simclrv2") -> (backbone state dict, projection dict)."""
    data = read_foreign(path)
    if fmt == "torchvision":
        return import_torchvision(data, backbone, source=str(path)), {}
    if fmt == "simclrv2":
        return import_simclr_v2(data, backbone, source=str(path))
    raise ModelError(f"unknown weights format {fmt!r}; valid: {', '.join(FORMATS)}")
