"""sensor_msgs/Image <-> numpy by hand, for the ROS 2 node and for recorded bags (no cv_bridge).

A message is its fields: `encoding`, `height`, `width`, `step` (bytes per row, padding included),
`is_bigendian` (for samples wider than a byte) and `data`. `image_from_fields` checks every one of
them against the others before it looks at a pixel, and gives what `read_frame` gives for a file:
uint8 HxW (grey) or HxWx3 RGB. mono16 is scaled by its 16 bits (`readers.scale_to_uint8`), as a
16-bit PNG without an sBIT chunk is, so a frame reads alike from a bag, a topic or a file.
Anything else is a FrameError naming what is wrong.

`image_fields(array, encoding)` is the other way, for what the node publishes (mono8, rgb8, 32FC1).
"""

from __future__ import annotations

import sys

import numpy as np

from marsedge.data.readers import check_pixels, max_pixels, scale_to_uint8
from marsedge.errors import FrameError

# encoding -> (channels, bytes per sample)
ENCODINGS: dict[str, tuple[int, int]] = {"mono8": (1, 1), "mono16": (1, 2), "rgb8": (3, 1), "bgr8": (3, 1)}
OUTPUT_ENCODINGS: dict[str, tuple[int, np.dtype]] = {"mono8": (1, np.dtype(np.uint8)),
                                                      "rgb8": (3, np.dtype(np.uint8)),
                                                      "32FC1": (1, np.dtype("<f4"))}
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/Image")  # rosbag2, ROS 1


class EncodingError(FrameError):
    """An encoding the node and edge-run do not read (logged once per encoding by the node)."""


def image_from_fields(encoding: str, height: int, width: int, step: int, is_bigendian: bool,
                      data) -> np.ndarray:
    """A sensor_msgs/Image's fields -> uint8 HxW or HxWx3 RGB (a copy: the message may be reused)."""
    if encoding not in ENCODINGS:
        raise EncodingError(f"unsupported image encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")
    channels, depth = ENCODINGS[encoding]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise FrameError(f"empty {encoding} image: {width}x{height}")
    check_pixels(f"{encoding} image", width, height, max_pixels())
    row = width * channels * depth
    if step < row:
        raise FrameError(f"wrong step: {step} bytes per row, a {width} px {encoding} row needs {row}")
    buffer = np.frombuffer(memoryview(data).cast("B"), np.uint8)
    if buffer.size != step * height:
        raise FrameError(f"size mismatch: {buffer.size} bytes of data, step {step} x height {height} "
                         f"is {step * height}")
    rows = buffer.reshape(height, step)[:, :row]  # the padding at the end of each row dropped
    if depth == 2:
        samples = rows.view(">u2" if is_bigendian else "<u2").reshape(height, width)
        return scale_to_uint8(samples.astype(np.uint16), 16)
    image = rows.reshape(height, width, channels) if channels == 3 else rows
    if encoding == "bgr8":
        return np.ascontiguousarray(image[:, :, ::-1])
    return image.copy()


def image_from_msg(msg) -> np.ndarray:
    """A sensor_msgs/Image (rclpy's or a rosbags one) -> uint8 HxW or HxWx3 RGB."""
    return image_from_fields(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)


def image_fields(array: np.ndarray, encoding: str) -> dict:
    """An HxW or HxWx3 array -> the fields of a sensor_msgs/Image of `encoding` (no row padding)."""
    channels, dtype = OUTPUT_ENCODINGS[encoding]
    array = np.ascontiguousarray(array, dtype=dtype)
    if (array.ndim == 3) != (channels == 3):
        raise ValueError(f"a {encoding} image needs {channels} channels, got shape {array.shape}")
    height, width = array.shape[:2]
    return {"encoding": encoding, "height": height, "width": width,
            "step": width * channels * dtype.itemsize,
            "is_bigendian": dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"),
            "data": array.tobytes()}
