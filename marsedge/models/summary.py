"""Model size and cost: parameters, multiply-accumulates (MACs) and stage shapes at an input size.

MACs are counted with forward hooks on every Conv2d and Linear (what dominates these nets; BN,
activations, pooling and resizing are left out, as papers do). Models are built on the `meta`
device, so a 795M-parameter net at 512x512 is summarised in seconds without allocating weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from marsedge.models.build import (
    ModelConfig,
    SegmentationModel,
    build_backbone,
    build_model,
    count_parameters,
)


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one Conv2d / Linear call: each output element costs (inputs per group x kernel) MACs."""
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * per_output
    return output.numel() * module.in_features


def count_macs(model: nn.Module, input_size: tuple[int, int], in_channels: int = 1,
               device: str | torch.device | None = None) -> dict[str, int]:
    """MACs of one forward pass on a single image, total and per top-level child (`backbone`, `head`)."""
    device = device or next(model.parameters()).device
    macs: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            group = name.split(".")[0] if "." in name else name

            def hook(mod: nn.Module, _inputs: tuple, output: torch.Tensor, group: str = group) -> None:
                macs[group] = macs.get(group, 0) + _layer_macs(mod, output)

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *input_size, device=device))
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    macs["total"] = sum(macs.values())
    return macs


@dataclass
class Summary:
    name: str
    input_size: tuple[int, int]
    params: dict[str, int]
    macs: dict[str, int]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def gmacs(self) -> float:
        return self.macs["total"] / 1e9

    def format(self) -> str:
        h, w = self.input_size
        lines = [f"{self.name} @ {h}x{w}"]
        for part in self.params:
            gm = self.macs.get(part, 0) / 1e9
            lines.append(f"  {part:<9} {self.params[part] / 1e6:10.2f} M params {gm:10.2f} GMACs")
        lines.append("  stage outputs (C x H x W):")
        lines += [f"    {name:<7} {' x '.join(map(str, shape))}" for name, shape in self.shapes.items()]
        return "\n".join(lines)


def summarize(cfg: ModelConfig | str, size: int | tuple[int, int] = 512, in_channels: int = 1) -> Summary:
    """Summary of a model config, or of a bare backbone (output stride 32) when given a backbone name.

    `in_channels` applies to a backbone name; a ModelConfig carries its own.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    with torch.device("meta"):
        if isinstance(cfg, str):
            model: nn.Module = _BackboneOnly(build_backbone(cfg, output_stride=32, in_channels=in_channels))
            name = cfg
        else:
            model = build_model(cfg)
            name, in_channels = f"{cfg.backbone} + {cfg.head} (os {cfg.output_stride})", cfg.in_channels
    shapes: dict[str, tuple[int, ...]] = {}

    def record(_module: nn.Module, _inputs: tuple, output: dict | tuple | torch.Tensor) -> None:
        if isinstance(output, dict):  # the backbone's stage features
            shapes.update({k: tuple(v.shape[1:]) for k, v in output.items() if k not in ("low", "out")})
        elif isinstance(output, tuple):  # a head's (logits, features): the map its classifier reads
            shapes["head"] = tuple(output[1].shape[1:])
        else:  # the model's logits, at input resolution
            shapes["logits"] = tuple(output.shape[1:])

    handles = [module.register_forward_hook(record) for part, module in model.named_children()
               if part in ("backbone", "head")]
    if isinstance(model, SegmentationModel):
        handles.append(model.register_forward_hook(record))
    try:
        macs = count_macs(model, size, in_channels, device="meta")
    finally:
        for handle in handles:
            handle.remove()
    params = {child: count_parameters(module) for child, module in model.named_children()}
    params["total"] = count_parameters(model)
    return Summary(name, size, params, macs, shapes)


class _BackboneOnly(nn.Module):
    """A bare backbone under the name `backbone`, so its MACs and params are grouped like a model's."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.backbone(x)


TEACHER_BACKBONES = ("r50_1x_sk0", "r50_2x_sk1", "r101_2x_sk1")
STUDENT_BACKBONE = "mnv2_1.0"
REFERENCE_TEACHER = ModelConfig("r101_2x_sk1", "deeplabv3")  # the multi-mission paper's teacher


def zoo_configs(output_stride: int = 16) -> list[ModelConfig]:
    """The zoo's comparison: each teacher backbone and the student with every head."""
    heads = [("aspp_seed", False), ("deeplabv3", False), ("deeplabv3plus", False), ("deeplabv3plus", True)]
    return [ModelConfig(backbone, head, output_stride, separable=separable)
            for backbone in (*TEACHER_BACKBONES, STUDENT_BACKBONE) for head, separable in heads]


def zoo_table(size: int = 512, output_stride: int = 16) -> str:
    """Markdown table of params and GMACs for zoo_configs(), with each model's MACs over the teacher's."""
    reference = summarize(dataclasses.replace(REFERENCE_TEACHER, output_stride=output_stride), size)
    rows = [f"| model (os {output_stride}, {size}x{size}, 1 channel) | params (M) | backbone GMACs | "
            f"head GMACs | total GMACs | MACs / r101_2x_sk1+deeplabv3 |",
            "|---|---:|---:|---:|---:|---:|"]
    for cfg in zoo_configs(output_stride):
        s = summarize(cfg, size)
        head = cfg.head + (" (separable)" if cfg.separable else "")
        rows.append(f"| {cfg.backbone} + {head} | {s.params['total'] / 1e6:.2f} | "
                    f"{s.macs['backbone'] / 1e9:.2f} | {s.macs['head'] / 1e9:.2f} | {s.gmacs:.2f} | "
                    f"{s.macs['total'] / reference.macs['total']:.4f} |")
    return "\n".join(rows)
