"""Training augmentations (NumPy/OpenCV, no torch).

Joint image + label augmentations for supervised training run in two stages around THE
preprocessing (marsedge.data.preprocess), so that resizing is done by one function only:

    geometric(image, label)        native frame: horizontal flip, scale-crop window
    preprocess / resize_label      the window -> model input size (area/linear; nearest for labels)
    photometric(x)                 float CxHxW in [0, 1]: brightness, contrast, blur, noise

Scale-crop picks a zoom s in `scale` and a window of (H/s, W/s) pixels: s > 1 zooms in, s < 1 pads
the frame (image 0, label 255 = ignore) and zooms out. Every random draw comes from the generator
passed in; training derives it from (seed, epoch, frame index) with `sample_rng`, so a frame gets
the same augmentation whatever the worker, process count or resume point.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from marsedge.terrain import IGNORE_INDEX


@dataclass
class JointAugmentConfig:
    enabled: bool = True
    hflip: float = 0.5  # probability of a horizontal flip
    scale: tuple[float, float] = (0.75, 1.5)  # zoom range of the scale-crop; (1, 1) turns it off
    brightness: float = 0.1  # additive shift drawn from [-b, b] (image in 0..1)
    contrast: float = 0.2  # factor drawn from [1 - c, 1 + c] around the frame mean
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.2)  # Gaussian sigma in pixels of the model input
    noise_prob: float = 0.3
    noise_std: float = 0.02  # Gaussian sensor noise (image in 0..1)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one frame in one epoch: independent of workers, ranks and resumes."""
    return np.random.default_rng([seed, epoch, index])


def hflip(image: np.ndarray, label: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirror left-right (HxW or HxWxC image, HxW label)."""
    flipped = np.ascontiguousarray(image[:, ::-1])
    return flipped, None if label is None else np.ascontiguousarray(label[:, ::-1])


def scale_crop(image: np.ndarray, label: np.ndarray | None, zoom: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """A random window of (H/zoom, W/zoom) pixels; zoom < 1 pads first (image 0, label ignore)."""
    h, w = image.shape[:2]
    wh, ww = max(1, round(h / zoom)), max(1, round(w / zoom))
    if wh > h or ww > w:
        ph, pw = max(0, wh - h), max(0, ww - w)
        top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        pad = ((top, ph - top), (left, pw - left))
        image = np.pad(image, pad + ((0, 0),) * (image.ndim - 2), constant_values=0)
        if label is not None:
            label = np.pad(label, pad, constant_values=IGNORE_INDEX)
        h, w = image.shape[:2]
    y, x = int(rng.integers(0, h - wh + 1)), int(rng.integers(0, w - ww + 1))
    image = image[y:y + wh, x:x + ww]
    return image, None if label is None else label[y:y + wh, x:x + ww]


def geometric(image: np.ndarray, label: np.ndarray | None, cfg: JointAugmentConfig,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """The image/label-consistent part, on the native frame (before preprocessing)."""
    if not cfg.enabled:
        return image, label
    if rng.random() < cfg.hflip:
        image, label = hflip(image, label)
    lo, hi = cfg.scale
    if (lo, hi) != (1.0, 1.0):
        image, label = scale_crop(image, label, float(rng.uniform(lo, hi)), rng)
    return image, label


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each channel of a float CxHxW array."""
    return np.stack([cv2.GaussianBlur(c, (0, 0), sigmaX=sigma, sigmaY=sigma) for c in x])


def photometric(x: np.ndarray, cfg: JointAugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Image-only changes on the preprocessed float CxHxW in [0, 1]; labels are unaffected."""
    if not cfg.enabled:
        return x
    x = x.astype(np.float32, copy=True)
    if cfg.contrast:
        factor = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        mean = x.mean()
        x = (x - mean) * np.float32(factor) + mean
    if cfg.brightness:
        x += np.float32(rng.uniform(-cfg.brightness, cfg.brightness))
    if rng.random() < cfg.blur_prob:
        x = gaussian_blur(x, float(rng.uniform(*cfg.blur_sigma)))
    if rng.random() < cfg.noise_prob:
        x += rng.normal(0.0, cfg.noise_std, size=x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0, out=x)
