"""Backbones (SimCLRv2 ResNets, MobileNetV2), segmentation heads, the model registry, checkpoints.

    from marsedge.models import ModelConfig, build_model, load_model
    model = build_model(ModelConfig(backbone="r101_2x_sk1", head="deeplabv3", output_stride=16))
"""

from marsedge.models.build import (
    BACKBONES,
    HEADS,
    ModelConfig,
    SegmentationModel,
    build_backbone,
    build_model,
    count_parameters,
)
from marsedge.models.checkpoints import (
    Checkpoint,
    LoadReport,
    load_checkpoint,
    load_model,
    load_weights,
    save_checkpoint,
)
from marsedge.models.heads import LinearProbe, ProjectionMLP

__all__ = [
    "BACKBONES",
    "HEADS",
    "Checkpoint",
    "LinearProbe",
    "LoadReport",
    "ModelConfig",
    "ProjectionMLP",
    "SegmentationModel",
    "build_backbone",
    "build_model",
    "count_parameters",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "save_checkpoint",
]
