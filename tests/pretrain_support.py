"""A one-epoch pretraining config on a tiny tree, for the tests of mode `pretrain`."""

from __future__ import annotations

from pathlib import Path


def write_pretrain_config(folder: Path, root: Path, name: str, objective: str | None = None) -> Path:
    """FOLDER/pretrain.yaml: run NAME, 1 epoch of 8 train frames of ROOT at batch 4; `objective` is
    written only when given, so None leaves the mode's default."""
    path = folder / "pretrain.yaml"
    line = f"  objective: {objective}\n" if objective else ""
    path.write_text(f"""
mode: pretrain
name: {name}
epochs: 1
batch_size: 4
data: {{root: {root}}}
optim: {{name: lars, lr: 0.3, weight_decay: 1.0e-6, schedule: cosine, warmup_epochs: 0.5}}
pretrain:
{line}  sources:
    - {{root: {root}, split: train}}
  frames_per_epoch: 8
""")
    return path
