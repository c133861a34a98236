"""THE preprocessing: one function, used by training, export checks, calibration and the edge.

    frame (uint8/uint16 HxW or HxWx3) -> float32 CxHxW

1. colour -> grey when the model takes one channel (ITU-R 601 luma, as OpenCV does);
2. resize to the model input: INTER_AREA when shrinking (no aliasing of fine soil grain),
   INTER_LINEAR when enlarging; labels always INTER_NEAREST so class ids stay ids;
3. scale to 0..1 by the frame's dtype range;
4. brighten by a gain and clip (the less-labels paper brightens its dark NAVCAM frames x1.5);
5. replicate a grey frame to 3 channels when the model takes three.

The spec travels with every checkpoint and ONNX model (`PreprocessSpec.to_dict`), so the rover
needs nothing but the model file to prepare frames exactly as training did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from marsedge.errors import ConfigError, FrameError


@dataclass(frozen=True)
class PreprocessSpec:
    height: int = 512
    width: int = 512
    channels: int = 1  # model input channels: 1 (greyscale NAVCAM) or 3
    gain: float = 1.5  # brightness gain applied after scaling to 0..1, then clipped to [0, 1]

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"preprocess.channels must be 1 or 3, got {self.channels}")
        if self.height <= 0 or self.width <= 0:
            raise ConfigError(f"preprocess size must be positive, got {self.height}x{self.width}")
        if self.gain <= 0:
            raise ConfigError(f"preprocess.gain must be positive, got {self.gain}")

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        unknown = set(data) - {"height", "width", "channels", "gain"}
        if unknown:
            raise ConfigError(f"unknown preprocess key(s): {sorted(unknown)}")
        return cls(**data)


def _to_unit_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32)  # already 0..1
    raise FrameError(f"unsupported frame dtype {image.dtype}")


def to_grey(image: np.ndarray) -> np.ndarray:
    """HxWx3 RGB (or HxWx1) -> HxW; HxW passes through."""
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return image


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """One frame -> float32 CxHxW in [0, 1], ready for the model."""
    if image.ndim not in (2, 3) or image.size == 0:
        raise FrameError(f"frame must be HxW or HxWx3, got shape {image.shape}")
    if spec.channels == 1:
        image = to_grey(image)
    elif image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    h, w = image.shape[:2]
    if (h, w) != spec.size:
        shrinking = h * w > spec.height * spec.width
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (spec.width, spec.height), interpolation=interp)
    x = _to_unit_float(image)
    x = np.clip(x * np.float32(spec.gain), 0.0, 1.0, out=x)
    return x[None] if x.ndim == 2 else np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_batch(images: list[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """Several frames -> float32 NxCxHxW."""
    return np.stack([preprocess(im, spec) for im in images])


def resize_label(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """Class-id mask resize: nearest neighbour, so ids (and 255 ignore) survive."""
    if label.shape[:2] == (height, width):
        return label
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
