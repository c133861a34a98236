"""Contrastive views for SimCLR pretraining (NumPy/OpenCV, no torch).

One frame gives two independently augmented views. SimCLR's recipe, as the homogeneous-Mars paper
uses it (section 4.1), in the order SimCLR applies it:

    random resized crop   a window of `crop_scale` x the frame area and aspect ratio in `crop_ratio`,
                          cut from the native frame and resized by THE preprocessing (so views are
                          prepared exactly like training and edge frames)
    horizontal flip       with probability `hflip`
    colour jitter         with probability `jitter_prob`: brightness, contrast and, for colour
                          frames, saturation, in random order (SimCLR's strength-s jitter)
    greyscale             with probability `grey_prob` (colour frames only; NAVCAM is already grey)
    Gaussian blur         with probability `blur_prob`, sigma in `blur_sigma` x the view size / 224

Random draws come from the generator passed in; the pretraining dataset derives it from
(seed, epoch, frame index, view) so a view does not depend on workers, ranks or resume points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from marsedge.data.preprocess import PreprocessSpec, preprocess


@dataclass
class ContrastiveViewConfig:
    crop_scale: tuple[float, float] = (0.2, 1.0)  # fraction of the frame area kept by the crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range of the crop window
    hflip: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.4  # factor drawn from [1 - c, 1 + c] around the view mean
    saturation: float = 0.4  # colour frames only
    grey_prob: float = 0.2  # colour frames only
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # SimCLR's range for 224 px views, scaled by size


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                            rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a window with area fraction in `scale` and aspect ratio in `ratio`
    (log-uniform), as torchvision's RandomResizedCrop draws it."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return 0, 0, height, width  # no window fits after 10 draws (extreme ratios): the whole frame


def _jitter(x: np.ndarray, cfg: ContrastiveViewConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast (and saturation for 3 channels) in random order on float CxHxW."""
    ops = ["brightness", "contrast"] + (["saturation"] if x.shape[0] == 3 else [])
    for op in rng.permutation(ops):
        strength = getattr(cfg, op)
        if not strength:
            continue
        factor = np.float32(rng.uniform(max(0.0, 1 - strength), 1 + strength))
        if op == "brightness":
            x = x * factor
        elif op == "contrast":
            mean = _luma(x).mean()
            x = (x - mean) * factor + mean
        else:
            grey = _luma(x)[None]
            x = (x - grey) * factor + grey
        x = np.clip(x, 0.0, 1.0)
    return x.astype(np.float32, copy=False)


def _luma(x: np.ndarray) -> np.ndarray:
    if x.shape[0] == 1:
        return x[0]
    return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]


def contrastive_view(image: np.ndarray, spec: PreprocessSpec, cfg: ContrastiveViewConfig,
                     rng: np.random.Generator) -> np.ndarray:
    """One augmented view of a native frame (uint8 HxW or HxWx3) as float32 CxHxW in [0, 1]."""
    top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], cfg.crop_scale, cfg.crop_ratio,
                                              rng)
    x = preprocess(np.ascontiguousarray(image[top:top + h, left:left + w]), spec)
    if rng.random() < cfg.hflip:
        x = np.ascontiguousarray(x[:, :, ::-1])
    if rng.random() < cfg.jitter_prob:
        x = _jitter(x, cfg, rng)
    if x.shape[0] == 3 and rng.random() < cfg.grey_prob:
        x = np.repeat(_luma(x)[None], 3, axis=0).astype(np.float32)
    if rng.random() < cfg.blur_prob:
        sigma = float(rng.uniform(*cfg.blur_sigma)) * spec.height / 224
        x = np.stack([cv2.GaussianBlur(c, (0, 0), sigmaX=sigma, sigmaY=sigma) for c in x])
    return np.ascontiguousarray(x, dtype=np.float32)


def view_rng(seed: int, epoch: int, index: int, view: int) -> np.random.Generator:
    """The generator for one view of one frame in one epoch."""
    return np.random.default_rng([seed, epoch, index, view])
