"""Frames of every encoding the node and the bag source read, as sensor_msgs/Image fields and as the
image files edge-run reads, built from the tiny AI4Mars tree (MSL grey, M2020 colour).

The message side is written from the sensor_msgs/Image description (row stride `step` with padding,
`is_bigendian` for mono16), not by the project's own converter.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ENCODINGS = ("mono8", "mono16", "rgb8", "bgr8")


def frames(tiny_ai4mars: Path, n: int) -> list[tuple[str, np.ndarray]]:
    """n (encoding, samples) pairs cycling through ENCODINGS: grey uint8, uint16 (all 16 bits used),
    RGB uint8."""
    grey = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            for p in sorted((tiny_ai4mars / "msl/images/edr").iterdir())]
    colour = [cv2.imread(str(p), cv2.IMREAD_COLOR)[:, :, ::-1]
              for p in sorted((tiny_ai4mars / "m2020/images/ncam").iterdir())]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        encoding = ENCODINGS[i % len(ENCODINGS)]
        if encoding == "mono8":
            out.append((encoding, grey[i % len(grey)]))
        elif encoding == "mono16":
            low = rng.integers(0, 256, grey[0].shape, dtype=np.uint16)
            out.append((encoding, grey[i % len(grey)].astype(np.uint16) * 256 + low))
        else:
            out.append((encoding, np.ascontiguousarray(colour[i % len(colour)])))
    return out


def fields(encoding: str, samples: np.ndarray, pad: int = 0, bigendian: bool = False) -> dict:
    """sensor_msgs/Image fields of `samples` (RGB for rgb8 and bgr8), each row padded by `pad` bytes."""
    if encoding == "bgr8":
        samples = samples[:, :, ::-1]
    if encoding == "mono16":
        samples = samples.astype(">u2" if bigendian else "<u2")
    height, width = samples.shape[:2]
    rows = np.ascontiguousarray(samples).view(np.uint8).reshape(height, -1)
    padded = np.zeros((height, rows.shape[1] + pad), np.uint8)
    padded[:, : rows.shape[1]] = rows
    return {"encoding": encoding, "height": height, "width": width, "step": padded.shape[1],
            "is_bigendian": bigendian, "data": padded.tobytes()}


def write_file(folder: Path, name: str, encoding: str, samples: np.ndarray) -> Path:
    """The same frame as an image file edge-run reads (PNG: 8-bit grey, 16-bit grey, colour)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    cv2.imwrite(str(path), samples[:, :, ::-1] if samples.ndim == 3 else samples)
    return path


def stamp_name(sec: int, nanosec: int) -> str:
    """How the bag source names a frame: its header stamp."""
    return f"{sec:010d}.{nanosec:09d}"
