"""Small real models for the edge tests: a narrow MobileNetV2-DeepLabv3+ student at 64 px.

`make_student(dir)` builds the real student architecture (mnv2_0.35, separable head, 32 channels),
gives its BatchNorm layers non-trivial statistics (so export folds real numbers), saves it as a
marsedge checkpoint and exports it with `marsedge.deploy.export` (which verifies itself).
"""

from __future__ import annotations

from pathlib import Path

SIZE = 64


def make_student(folder: Path, size: int = SIZE, seed: int = 0) -> tuple[Path, Path]:
    import torch

    from marsedge.data.preprocess import PreprocessSpec
    from marsedge.deploy.export import export
    from marsedge.models.build import ModelConfig, build_model
    from marsedge.models.checkpoints import save_checkpoint

    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="mnv2_0.35", head="deeplabv3plus", head_channels=32, separable=True)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(folder / "student.pt", model, cfg, PreprocessSpec(size, size))
    onnx_path, _ = export(ckpt, folder / "student.onnx", verify_frames=2)
    return ckpt, onnx_path
