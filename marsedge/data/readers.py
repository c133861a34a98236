"""The frame reader registry, the pixel limit, and the raster (JPG/PNG/TIFF/BMP) reader.

Every reader is `reader(path, max_pixels) -> np.ndarray` and is registered by suffix with
`@register_reader(".ext")`; `marsedge.data.frames.read_frame` picks one and turns anything it
raises into a `FrameError` naming the file.

Bounded decoding: a frame larger than the pixel limit is refused from its header, before a byte of
pixels is decoded (a 389 KB PNG can declare 20000x20000 and cost OpenCV gigabytes). The limit is
`DEFAULT_MAX_PIXELS` (64 MP: a 5120x3840 M2020 NAVCAM frame is 19.7 MP, an MSL NAVCAM EDR 1 MP),
overridden by the environment variable `MARSEDGE_MAX_PIXELS` or by the `max_pixels` argument of
`read_frame`. Headers read here: PNG `IHDR`, JPEG `SOFn`, BMP `BITMAPINFOHEADER`; TIFF has no
header check and relies on OpenCV's own limit (`OPENCV_IO_MAX_IMAGE_PIXELS`, 2^30 by default).
PDS3/PDS4 check their labels (`marsedge.data.pds`), videos their capture size (`frames`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from marsedge.errors import ConfigError, DataError, FrameError

DEFAULT_MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "MARSEDGE_MAX_PIXELS"

Reader = Callable[[Path, int], np.ndarray]
READERS: dict[str, Reader] = {}


def register_reader(*suffixes: str) -> Callable[[Reader], Reader]:
    def add(fn: Reader) -> Reader:
        for suffix in suffixes:
            READERS[suffix.lower()] = fn
        return fn

    return add


def max_pixels(value: int | None = None) -> int:
    """The pixel limit in force: `value`, else `$MARSEDGE_MAX_PIXELS`, else `DEFAULT_MAX_PIXELS`."""
    if value is not None:
        return int(value)
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(float(text))
    except ValueError:
        raise ConfigError(f"{MAX_PIXELS_ENV} must be a pixel count, got '{text}'") from None
    if limit <= 0:
        raise ConfigError(f"{MAX_PIXELS_ENV} must be positive, got {limit}")
    return limit


def check_pixels(path: Path | str, width: int, height: int, limit: int) -> None:
    """Refuse a frame whose header declares more than `limit` pixels (or a non-positive size)."""
    if width <= 0 or height <= 0:
        raise FrameError(f"frame declares an empty size {width}x{height}: {path}")
    if width * height > limit:
        raise FrameError(
            f"frame too large: {path} declares {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {limit:,} ({MAX_PIXELS_ENV})"
        )


def scale_to_uint8(array: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Integer samples of `bits` significant bits -> uint8 (full range of `bits` -> 0..255).

    `bits` defaults to the dtype's width. Floats are taken as 0..1.
    """
    if array.dtype == np.uint8 and bits in (None, 8):
        return array
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise FrameError(f"unsupported sample type {array.dtype}")
    bits = bits or array.dtype.itemsize * 8
    if not 1 <= bits <= array.dtype.itemsize * 8:  # a fuzzed PDS4 sample_bits 2**31 hung 2**bits - 1
        raise FrameError(f"{bits} significant bits declared for {array.dtype.itemsize * 8}-bit samples")
    top = float(2**bits - 1)
    scaled = np.clip(array.astype(np.float32), 0, top) * np.float32(255.0 / top) + np.float32(0.5)
    return scaled.astype(np.uint8)


def _check_complete(path: Path, data: bytes) -> None:
    """Catch truncated JPEG/PNG files, which OpenCV would decode with a grey or black tail."""
    if not data:
        raise FrameError(f"empty file: {path}")
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < len(data) - 64:
        raise FrameError(f"truncated JPEG (no end-of-image marker): {path}")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-16:]:
        raise FrameError(f"truncated PNG (no IEND chunk): {path}")


def _check_png_chunks(path: Path, data: bytes) -> None:
    """Every PNG chunk's declared length must fit in the file. OpenCV's PNG decoder allocates (and
    touches) a buffer of the length a chunk declares before it finds the file short: a 3 KB PNG whose
    IDAT claims 2 GiB took 2.1 GB of memory and 1.2 s (found by tests/fuzz_frames.py)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length  # length, type, data, CRC
        if end > len(data):
            raise FrameError(f"corrupt PNG: chunk {data[pos + 4 : pos + 8]!r} at byte {pos} declares "
                             f"{length:,} bytes, past the end of the file: {path}")
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos = end


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the IHDR chunk, which the PNG standard puts first."""
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOFn segment (ITU T.81 B.2.2), walking the marker segments."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers carry no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG, JPEG or BMP declares in its header; None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:2] == b"BM":
        return _bmp_size(data)
    return None


def _png_significant_bits(data: bytes) -> int | None:
    """The PNG sBIT chunk (significant bits per sample), if any, read from the chunk list."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"sBIT":
            return max(data[pos + 8 : pos + 8 + length]) if length else None
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


@register_reader(".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
def read_raster(path: Path, limit: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """JPG/PNG/TIFF/BMP through OpenCV, RGB order; 16-bit PNGs scaled by their sBIT depth if any."""
    data = path.read_bytes()
    _check_complete(path, data)
    _check_png_chunks(path, data)
    size = header_size(data)
    if size is not None:
        check_pixels(path, *size, limit)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise FrameError(f"cannot decode image: {path}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3:
        image = image[..., 0]
    bits = _png_significant_bits(data) if data[:4] == b"\x89PNG" and image.dtype == np.uint16 else None
    return scale_to_uint8(image, bits)


def png_palette(data: bytes) -> np.ndarray | None:
    """The PLTE chunk of a palette PNG (IHDR colour type 3) as N x 3 RGB; None for any other file."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 26 or data[12:16] != b"IHDR" or data[25] != 3:
        return None
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"PLTE":
            return np.frombuffer(data[pos + 8 : pos + 8 + length - length % 3], np.uint8).reshape(-1, 3)
        pos += 12 + length
    return None


def read_index_raster(path: Path) -> tuple[np.ndarray, bool]:
    """A raster of ids (a label): (HxW array, True when they are a palette PNG's indices). A palette
    PNG is read by its indices (OpenCV gives its colours, mapped back through the palette); a colour
    image whose channels differ is refused: its colours are not ids."""
    data = path.read_bytes()
    _check_complete(path, data)
    _check_png_chunks(path, data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise DataError(f"cannot read label {path}")
    palette = png_palette(data)
    if image.ndim == 2:
        return image, False
    rgb = image[..., 2::-1].astype(np.uint32)  # OpenCV's BGR(A) -> RGB
    if palette is not None:
        keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        wide = palette.astype(np.uint32)
        colours = (wide[:, 0] << 16) | (wide[:, 1] << 8) | wide[:, 2]
        if len(np.unique(colours)) != len(colours):
            raise DataError(f"label {path}: its palette repeats a colour, so its indices cannot be read")
        order = np.argsort(colours)
        at = np.clip(np.searchsorted(colours[order], keys), 0, len(colours) - 1)
        if not (colours[order][at] == keys).all():
            raise DataError(f"label {path}: pixels of a colour its palette lacks")
        return order[at].astype(np.uint8), True
    if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
        raise DataError(f"label {path} is colour-coded (its RGB channels differ): a label holds class ids in "
                        "one channel (grey, or a palette PNG's indices); convert it to ids first")
    return image[..., 0], False
