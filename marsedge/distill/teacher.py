"""The frozen teacher: loaded once, in eval mode, gradients off, run under no_grad in bf16/fp16 on GPU.

`FrozenTeacher` is deliberately not an `nn.Module` attribute of anything the loop trains: its
parameters never reach the optimiser, DDP, the checkpoint or `model.train()`, so they cannot change
and its BatchNorm statistics stay those of the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from marsedge.data.preprocess import PreprocessSpec
from marsedge.errors import ModelError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def teacher_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the teacher; None = plain float32 (CPU autocast buys nothing here)."""
    if precision not in PRECISIONS:
        raise ModelError(f"teacher precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16" and device.type != "cuda":
        raise ModelError("teacher precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def stage_channels(model: nn.Module, in_channels: int) -> dict[str, int]:
    """Channels of every map `forward_features` returns, found with one tiny probe forward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        _, feats = model.forward_features(torch.zeros(1, in_channels, 64, 64, device=device))
    model.train(was_training)
    return {name: int(t.shape[1]) for name, t in feats.items()}


class FrozenTeacher:
    """A trained segmentation model used only as a source of targets."""

    def __init__(self, model: nn.Module, spec: PreprocessSpec, device: torch.device,
                 precision: str = "auto", source: str = "teacher") -> None:
        self.model = model.to(device).eval().requires_grad_(False)
        self.spec = spec
        self.device = device
        self.dtype = teacher_dtype(precision, device)
        self.source = source
        self.num_classes = int(model.config.num_classes)
        self.channels = stage_channels(self.model, spec.channels)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device,
                        precision: str = "auto") -> FrozenTeacher:
        from marsedge.edge.onnx_meta import ModelMetadata
        from marsedge.models.checkpoints import load_model

        model, ckpt = load_model(path, map_location=device)
        spec = ModelMetadata.from_checkpoint(ckpt, source=path).preprocess
        return cls(model, spec, device, precision, source=str(path))

    def check_student_input(self, student_spec: PreprocessSpec, student_classes: int) -> None:
        """The student must see the frames the teacher was trained on (only the size may differ)."""
        if (student_spec.channels, student_spec.gain) != (self.spec.channels, self.spec.gain):
            raise ModelError(
                f"{self.source}: teacher preprocessing {self.spec.to_dict()} and student "
                f"'data.preprocess' {student_spec.to_dict()} differ in channels or gain"
            )
        if student_classes != self.num_classes:
            raise ModelError(f"{self.source}: teacher has {self.num_classes} classes, student "
                             f"'model.num_classes' is {student_classes}")

    def _autocast(self):
        # fp32 explicitly disables an enclosing autocast (the loop's run.amp applies to the student)
        if self.dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, with_features: bool = False
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Float32 logits at the input's size (and the stage maps when asked) for a student batch.

        A student input of another size than the teacher's is resized to the teacher's for the
        forward pass and the logits resized back: the teacher always sees its own input size.
        """
        images = images.to(self.device, non_blocking=True).float()
        size = images.shape[-2:]
        if tuple(size) != self.spec.size:
            images = F.interpolate(images, size=self.spec.size, mode="bilinear", align_corners=False,
                                   antialias=True)
        with self._autocast():
            if with_features:
                logits, feats = self.model.forward_features(images)
            else:
                logits, feats = self.model(images), {}
        logits = logits.float()
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits, {k: v.float() for k, v in feats.items()}
