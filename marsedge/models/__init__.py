"""Backbones (SimCLRv2 ResNets, MobileNetV2), segmentation heads, the model registry, checkpoints.

    from marsedge.models import ModelConfig, build_model, load_model
    model = build_model(ModelConfig(backbone="r101_2x_sk1", head="deeplabv3", output_stride=16))

The names below are imported on first use (PEP 562), so that importing `marsedge.models.cli` to
build `marsedge --help` does not import torch: the CLI must start on a rover computer without it.
"""

import importlib

_EXPORTS = {
    "marsedge.models.build": ("BACKBONES", "HEADS", "ModelConfig", "SegmentationModel",
                              "build_backbone", "build_model", "count_parameters"),
    "marsedge.models.checkpoints": ("Checkpoint", "LoadReport", "load_checkpoint", "load_model",
                                    "load_weights", "save_checkpoint"),
    "marsedge.models.heads": ("DenseProjection", "LinearProbe", "ProjectionMLP"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'marsedge.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
