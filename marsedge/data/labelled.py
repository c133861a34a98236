"""The labelled split a model is scored on, whatever its task (torch-free).

    open_labelled("data/ai4mars", "gold-min3")       -> AI4MarsDataset (Sample: image, label mask)
    open_labelled("data/msl_classes", "test")       -> LabelledImages (ImageSample: image, class id)

`marsedge bench`, the quantization gate and calibration read splits through this, so a terrain
segmentation model and an MSL surface classifier go through the same commands; the layout of the
root decides (an MSL surface release has its class map file, see `marsedge.data.msl_surface`).
"""

from __future__ import annotations

from pathlib import Path

from marsedge.data.msl_surface import LabelledImages, is_msl_surface


def open_labelled(root: str | Path, split: str):
    """The split's dataset: `.items` (each with `.image`, a path, and `.name`), `len()`, `[i]`, iteration."""
    if is_msl_surface(root):
        return LabelledImages(root, split)
    from marsedge.data.ai4mars import AI4MarsDataset

    return AI4MarsDataset(root, split)
