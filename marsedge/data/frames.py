"""Frame sources: image files, PDS products, folders, globs, videos and V4L2 cameras.

`read_frame(path)` returns uint8 HxW (grey) or HxWx3 (RGB) for any registered suffix:

- JPG/PNG/TIFF/BMP through OpenCV; 16-bit PNGs are scaled by their significant bits (the PNG
  `sBIT` chunk) when declared, else by 16 bits;
- PDS3 `.IMG` with an attached label, detached `.LBL`, and PDS4 `.xml` labels through `pdr`.
  MSL NAVCAM EDRs hold 12-bit samples in 16-bit words: the sample depth comes from the label
  (PDS3 `SAMPLE_BIT_MASK`, PDS4 `img:sample_bit_mask` / `img:sample_bits`), never from a constant.

A corrupt, truncated or empty file raises `FrameError` naming the path. Readers live in a registry
by suffix (`READERS`); add one with `@register_reader(".ext")`.

`iter_frames(uri)` walks a file, folder, glob, video (`.mp4`, `.avi`, ...) or camera
(`/dev/videoN`) and yields `(name, frame)` or `(name, FrameError)`, so a long run logs a bad frame
and keeps going. This is what `edge-run` reads its input with.
"""

from __future__ import annotations

import glob
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from marsedge.errors import FrameError

Reader = Callable[[Path], np.ndarray]
READERS: dict[str, Reader] = {}
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
_CAMERA = re.compile(r"^/dev/video(\d+)$")


def register_reader(*suffixes: str) -> Callable[[Reader], Reader]:
    def add(fn: Reader) -> Reader:
        for suffix in suffixes:
            READERS[suffix.lower()] = fn
        return fn

    return add


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
def read_raster(path: Path) -> np.ndarray:
    data = path.read_bytes()
    _check_complete(path, data)
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


def _walk(meta, key: str):
    """Every value of `key` (case and namespace prefix ignored) in a nested label mapping."""
    if hasattr(meta, "items"):
        for k, v in meta.items():
            if str(k).split(":")[-1].lower() == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(meta, (list, tuple)):
        for v in meta:
            yield from _walk(v, key)


def _mask_bits(mask) -> int | None:
    """A PDS bit mask (4095, or "2#0000111111111111#") -> number of significant bits."""
    if isinstance(mask, str):
        text = mask.strip().strip("#")
        base, _, digits = text.partition("#")
        try:
            mask = int(digits.strip("#"), int(base)) if digits else int(text)
        except ValueError:
            return None
    return int(mask).bit_length() if isinstance(mask, (int, np.integer)) and mask > 0 else None


def declared_bits(meta, image_key: str | None = None) -> int | None:
    """Sample depth a PDS label declares: the bit mask first, then PDS4 `img:sample_bits`.

    PDS3 `SAMPLE_BITS` is the storage word (16 for 12-bit NAVCAM data), so it only counts when no
    mask is given and is then equal to the dtype width anyway.
    """
    scope = meta.get(image_key, meta) if image_key and hasattr(meta, "get") else meta
    for value in _walk(scope, "sample_bit_mask"):
        bits = _mask_bits(value)
        if bits:
            return bits
    if getattr(meta, "standard", "") == "PDS4":
        for value in _walk(meta, "sample_bits"):
            try:
                return int(value)
            except (TypeError, ValueError):
                continue
    return None


@register_reader(".img", ".xml", ".lbl")
def read_pds(path: Path) -> np.ndarray:
    """A PDS3 or PDS4 image product through pdr, scaled to 8 bits by its declared depth."""
    import pdr  # imported here: reading JPG/PNG should not pay for pdr's import

    if path.stat().st_size == 0:
        raise FrameError(f"empty file: {path}")
    with warnings.catch_warnings(record=True) as caught:  # pdr warns (and returns the label) on bad data
        warnings.simplefilter("always")
        try:
            data = pdr.read(str(path))
            names = list(data.keys())  # iterating a pdr.Data yields its objects, not their names
            keys = [k for k in names if "IMAGE" in k.upper()]
            array = data[keys[0]] if keys else None
        except Exception as exc:  # pdr raises many types for bad products; report them as one
            raise FrameError(f"cannot read PDS product {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(array, np.ndarray):
        why = "; ".join(str(w.message) for w in caught) or "no image object"
        raise FrameError(f"cannot read PDS product {path}: {why}")
    if array.ndim == 3 and array.shape[0] in (1, 3):  # bands first in PDS
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    if array.ndim not in (2, 3) or array.size == 0:
        raise FrameError(f"PDS image has unsupported shape {array.shape}: {path}")
    bits = declared_bits(data.metadata, keys[0])
    return scale_to_uint8(np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="))), bits)


def read_frame(path: str | Path) -> np.ndarray:
    """One frame file -> uint8 HxW or HxWx3 RGB. Raises FrameError naming the path."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise FrameError(f"no reader for '{path.suffix}' files: {path} (known: {', '.join(sorted(READERS))})")
    if not path.is_file():
        raise FrameError(f"frame not found: {path}")
    try:
        return reader(path)
    except OSError as exc:
        raise FrameError(f"cannot read {path}: {exc.strerror or exc}") from None


def _frame_files(paths: list[Path]) -> list[Path]:
    """Readable frames among paths; a PDS4 `.xml` or PDS3 `.lbl` hides the data file it describes."""
    chosen = [p for p in paths if p.suffix.lower() in READERS and p.is_file()]
    labels = {p.with_suffix("").as_posix() for p in chosen if p.suffix.lower() in (".xml", ".lbl")}
    return sorted(
        p for p in chosen if not (p.suffix.lower() == ".img" and p.with_suffix("").as_posix() in labels)
    )


def list_frames(uri: str | Path) -> list[Path]:
    """The frame files of a file, a folder (not recursive) or a glob pattern, sorted."""
    text = str(uri)
    path = Path(text)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = _frame_files(list(path.iterdir()))
    elif any(ch in text for ch in "*?["):
        files = _frame_files([Path(p) for p in glob.glob(text, recursive=True)])
    else:
        raise FrameError(f"no such file or folder: {text}")
    if not files:
        raise FrameError(f"no frames ({', '.join(sorted(READERS))}) in {text}")
    return files


def _capture_frames(source: str | int, name: str, uri: str) -> Iterator[tuple[str, np.ndarray | FrameError]]:
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        yield name, FrameError(f"cannot open video source {uri}")
        return
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                if index == 0:
                    yield name, FrameError(f"no frames could be read from {uri}")
                return
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame
            yield f"{name}_{index:06d}", frame
            index += 1
    finally:
        cap.release()


def _one_pass(uri: str) -> Iterator[tuple[str, np.ndarray | FrameError]]:
    camera = _CAMERA.match(uri)
    if camera:
        yield from _capture_frames(int(camera.group(1)), f"video{camera.group(1)}", uri)
    elif uri.lower().endswith(VIDEO_SUFFIXES):
        if not Path(uri).is_file():
            raise FrameError(f"video not found: {uri}")
        yield from _capture_frames(uri, Path(uri).stem, uri)
    else:
        for path in list_frames(uri):
            try:
                yield path.name, read_frame(path)
            except FrameError as exc:
                yield path.name, exc


def iter_frames(
    uri: str | Path, max_frames: int | None = None, loop: bool = False
) -> Iterator[tuple[str, np.ndarray | FrameError]]:
    """Frames of a file, folder, glob, video or `/dev/videoN` as (name, frame or FrameError).

    `loop` starts over at the end (a camera never ends); `max_frames` stops after that many.
    A source that cannot be listed at all (missing folder) raises FrameError at once.
    """
    count = 0
    while True:
        produced = False
        for name, frame in _one_pass(str(uri)):
            if max_frames is not None and count >= max_frames:
                return
            produced = True
            count += 1
            yield name, frame
        if not loop or not produced:
            return
