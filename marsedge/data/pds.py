"""PDS3 and PDS4 image products: the label chooses, sizes and checks the image before decoding.

PDS3 (`.IMG` with an attached label, or a detached `.LBL` next to its `.IMG`):
- the image is the object named by the `^IMAGE` pointer, never "the first key containing IMAGE":
  MSL/MER EDRs put an `^IMAGE_HEADER` (a VICAR header) first. Pointer forms: `^IMAGE = 12`
  (record 12 of this file, byte (12-1) x RECORD_BYTES), `^IMAGE = 2048 <BYTES>` (1-based byte),
  `^IMAGE = ("FILE.IMG", 3)` / `("FILE.IMG", 2048 <BYTES>)` / `"FILE.IMG"` (detached data file);
- `SAMPLE_TYPE` (MSB_/LSB_/PC_/VAX_/SUN_ INTEGER or UNSIGNED_INTEGER), `SAMPLE_BITS` 8 or 16,
  `BANDS` 1 or 3 with `BAND_STORAGE_TYPE` BAND_SEQUENTIAL / LINE_INTERLEAVED / SAMPLE_INTERLEAVED,
  `LINE_PREFIX_BYTES` / `LINE_SUFFIX_BYTES`;
- `SAMPLE_BIT_MASK` (2#0000111111111111# for 12-bit data in 16-bit words) masks the samples and
  sets the depth they are scaled to 8 bits by.
pdr (1.4.4) parses every label and decodes the image, except lines with LINE_SUFFIX_BYTES (pdr
refuses them: "Line pre/suffixes not aligned with array"), which `_decode_pds3` reads itself.
The pointer, the byte count and the pixel limit are checked here from the label, before pdr
touches the data: a label whose image runs past the end of its file is refused.

PDS4 (`.xml` label): the first `Array_2D_Image` / `Array_3D_Image` of a File_Area_Observational,
its `offset`, `Axis_Array` elements and `Element_Array/data_type` (UnsignedByte, SignedByte,
Unsigned/Signed MSB/LSB 2 and 4, IEEE754 floats taken as 0..1); `img:sample_bit_mask` or
`img:sample_bits` sets the depth. `Special_Constants` `missing_constant` / `invalid_constant`
samples become 0 in the frame (their mask is `PdsImage.invalid`); in a label raster they would be
ignore (255). pdr decodes; the offset + array size is checked against the file first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsedge.data.readers import DEFAULT_MAX_PIXELS, check_pixels, register_reader, scale_to_uint8
from marsedge.errors import FrameError

_PDS4_TYPES = {
    "UnsignedByte": "u1",
    "SignedByte": "i1",
    **{
        f"{s}{o}{n}": f"{'>' if o == 'MSB' else '<'}{'u' if s == 'Unsigned' else 'i'}{n}"
        for s in ("Unsigned", "Signed")
        for o in ("MSB", "LSB")
        for n in (2, 4)
    },
    "IEEE754MSBSingle": ">f4",
    "IEEE754LSBSingle": "<f4",
    "IEEE754MSBDouble": ">f8",
    "IEEE754LSBDouble": "<f8",
}
_LSB_PREFIXES = ("LSB", "PC_", "VAX")
_STORAGE = ("BAND_SEQUENTIAL", "LINE_INTERLEAVED", "SAMPLE_INTERLEAVED")


@dataclass
class PdsImage:
    array: np.ndarray  # samples as stored: HxW or HxWx3
    bits: int | None  # significant bits declared by the label (None: the dtype's width)
    invalid: np.ndarray | None  # HxW bool, PDS4 missing/invalid constants (None: none declared)


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


def _mask_value(mask) -> int | None:
    """A PDS bit mask (4095, "2#0000111111111111#", "16#0FFF#") -> its integer value."""
    if isinstance(mask, str):
        text = mask.strip().strip("#")
        base, _, digits = text.partition("#")
        try:
            mask = int(digits.strip("#"), int(base)) if digits else int(text)
        except ValueError:
            return None
    return int(mask) if isinstance(mask, (int, np.integer)) and mask > 0 else None


def _int(value, key: str, path: Path) -> int:
    try:
        return int(value["value"] if isinstance(value, dict) else value)
    except (TypeError, ValueError, KeyError):
        raise FrameError(f"label of {path}: {key} is not an integer ({value!r})") from None


def _open_label(path: Path):
    import pdr  # imported here: reading JPG/PNG should not pay for pdr's import

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # label_fn: the file itself is the label; pdr would otherwise prefer a same-stem .xml/.lbl
            return pdr.read(str(path), label_fn=str(path))
    except Exception as exc:  # pdr raises many types for bad labels; report them as one
        raise FrameError(f"cannot read PDS label {path}: {type(exc).__name__}: {exc}") from None


def _load(data, key: str, path: Path) -> np.ndarray:
    with warnings.catch_warnings(record=True) as caught:  # pdr warns (and returns the label) on bad data
        warnings.simplefilter("always")
        try:
            array = data[key]
        except Exception as exc:
            raise FrameError(f"cannot read PDS image {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(array, np.ndarray):
        why = "; ".join(str(w.message) for w in caught) or f"no image object '{key}'"
        raise FrameError(f"cannot read PDS image {path}: {why}")
    return array


def _data_file(label: Path, name: str) -> Path:
    """A detached data file named by a label: next to it, matched case-insensitively as archives vary."""
    candidate = label.parent / name
    if candidate.is_file():
        return candidate
    for entry in label.parent.iterdir():
        if entry.name.lower() == name.lower():
            return entry
    raise FrameError(f"label {label} points to a data file that does not exist: {candidate}")


def _check_extent(path: Path, data_path: Path, offset: int, nbytes: int) -> None:
    size = data_path.stat().st_size
    if offset + nbytes > size:
        raise FrameError(
            f"label of {path} declares {nbytes:,} image bytes from byte {offset:,} of {data_path.name}, "
            f"but the file holds {size:,}"
        )


def _pds3_pointer(meta, path: Path, record_bytes: int | None) -> tuple[Path, int]:
    """(data file, byte offset) of the `^IMAGE` pointer."""
    pointer = meta.get("^IMAGE")
    if pointer is None:
        raise FrameError(f"PDS3 label of {path} has no ^IMAGE pointer")
    name, where = (
        (pointer[0], pointer[1] if len(pointer) > 1 else 1)
        if isinstance(pointer, (tuple, list))
        else (pointer, 1)
        if isinstance(pointer, str)
        else (None, pointer)
    )
    data_path = path if name is None else _data_file(path, str(name))
    if isinstance(where, dict) and str(where.get("units", "")).upper() == "BYTES":
        return data_path, _int(where, "^IMAGE", path) - 1
    if record_bytes is None:
        raise FrameError(f"PDS3 label of {path} gives ^IMAGE in records but no RECORD_BYTES")
    return data_path, (_int(where, "^IMAGE", path) - 1) * record_bytes


def _pds3_dtype(obj, path: Path) -> np.dtype:
    kind = str(obj.get("SAMPLE_TYPE", "")).upper().replace(" ", "_")
    bits = _int(obj.get("SAMPLE_BITS"), "SAMPLE_BITS", path)
    if "INTEGER" not in kind or bits not in (8, 16):
        raise FrameError(
            f"PDS3 image of {path} has unsupported SAMPLE_TYPE {kind or '?'} / SAMPLE_BITS {bits}"
        )
    order = "<" if kind.startswith(_LSB_PREFIXES) else ">"
    return np.dtype(f"{order}{'u' if 'UNSIGNED' in kind else 'i'}{bits // 8}")


def _decode_pds3(
    data_path: Path,
    offset: int,
    shape: tuple[int, int, int],
    dtype: np.dtype,
    prefix: int,
    suffix: int,
    storage: str,
) -> np.ndarray:
    """Lines with prefix and suffix bytes -> bands x lines x samples (pdr refuses suffixes)."""
    bands, lines, samples = shape
    per_line = samples * (bands if storage == "SAMPLE_INTERLEAVED" else 1)
    n_lines = lines * (1 if storage == "SAMPLE_INTERLEAVED" else bands)
    line_bytes = prefix + per_line * dtype.itemsize + suffix
    with open(data_path, "rb") as f:
        f.seek(offset)
        raw = np.frombuffer(f.read(n_lines * line_bytes), np.uint8).reshape(n_lines, line_bytes)
    body = np.ascontiguousarray(raw[:, prefix : line_bytes - suffix]).view(dtype)
    if storage == "BAND_SEQUENTIAL":
        return body.reshape(bands, lines, samples)
    if storage == "LINE_INTERLEAVED":
        return body.reshape(lines, bands, samples).transpose(1, 0, 2)
    return body.reshape(lines, samples, bands).transpose(2, 0, 1)


def read_pds3(path: Path, limit: int = DEFAULT_MAX_PIXELS) -> PdsImage:
    data = _open_label(path)
    meta = data.metadata
    obj = meta.get("IMAGE")
    if not hasattr(obj, "get"):
        raise FrameError(f"PDS3 label of {path} has no IMAGE object")
    lines = _int(obj.get("LINES"), "LINES", path)
    samples = _int(obj.get("LINE_SAMPLES"), "LINE_SAMPLES", path)
    bands = _int(obj.get("BANDS", 1), "BANDS", path)
    check_pixels(path, samples, lines, limit)
    if bands not in (1, 3):
        raise FrameError(f"PDS3 image of {path} has {bands} bands; frames have 1 or 3")
    storage = str(obj.get("BAND_STORAGE_TYPE", "BAND_SEQUENTIAL")).upper()
    if storage not in _STORAGE:
        raise FrameError(f"PDS3 image of {path} has unknown BAND_STORAGE_TYPE {storage}")
    dtype = _pds3_dtype(obj, path)
    prefix = _int(obj.get("LINE_PREFIX_BYTES", 0), "LINE_PREFIX_BYTES", path)
    suffix = _int(obj.get("LINE_SUFFIX_BYTES", 0), "LINE_SUFFIX_BYTES", path)
    record = meta.get("RECORD_BYTES")
    record = None if record is None else _int(record, "RECORD_BYTES", path)
    data_path, offset = _pds3_pointer(meta, path, record)
    per_row = samples * (bands if storage == "SAMPLE_INTERLEAVED" else 1)
    row_bytes = prefix + suffix + per_row * dtype.itemsize
    fixed = str(meta.get("RECORD_TYPE", "FIXED_LENGTH")).upper() == "FIXED_LENGTH"
    if fixed and record and row_bytes % record:  # a line fills one record, or several whole ones
        raise FrameError(f"PDS3 label of {path}: an image line is {row_bytes} bytes (LINE_SAMPLES {samples} "
                         f"x {dtype.itemsize} + prefix/suffix bytes) in records of RECORD_BYTES {record}; "
                         "the label does not describe its data (it would be read sheared)")
    rows = lines if storage == "SAMPLE_INTERLEAVED" else lines * bands  # prefix/suffix on every row
    nbytes = rows * (prefix + suffix) + bands * lines * samples * dtype.itemsize
    _check_extent(path, data_path, offset, nbytes)
    if suffix:
        array = _decode_pds3(data_path, offset, (bands, lines, samples), dtype, prefix, suffix, storage)
    else:
        array = _load(data, "IMAGE", path)
    expected = (lines, samples) if bands == 1 else (bands, lines, samples)
    if array.shape != expected and array.shape != (bands, lines, samples):
        raise FrameError(f"PDS3 image of {path} decoded as {array.shape}, its label says {expected}")
    array = array.reshape(bands, lines, samples)
    array = array[0] if bands == 1 else np.moveaxis(array, 0, -1)
    array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("=")))
    mask = _mask_value(obj.get("SAMPLE_BIT_MASK"))
    if mask is not None and np.issubdtype(array.dtype, np.unsignedinteger):
        array &= array.dtype.type(mask & np.iinfo(array.dtype).max)
    return PdsImage(array, mask.bit_length() if mask else None, None)


def _getall(node, key: str) -> list:
    if not hasattr(node, "get"):
        return []
    return (
        list(node.getall(key))
        if hasattr(node, "getall") and key in node
        else ([node[key]] if key in node else [])
    )


def _pds4_array(meta, path: Path):
    """(File_Area_Observational, array node) of the first 2D/3D image array in the label."""
    for product in meta.values() if hasattr(meta, "values") else []:
        for area in _getall(product, "File_Area_Observational"):
            for kind in ("Array_2D_Image", "Array_3D_Image"):
                arrays = _getall(area, kind)
                if arrays:
                    return area, arrays[0]
    raise FrameError(f"PDS4 label {path} has no Array_2D_Image or Array_3D_Image")


def _special_constants(node) -> list[float]:
    values = []
    for specials in _getall(node, "Special_Constants"):
        for key in ("missing_constant", "invalid_constant"):
            for v in _getall(specials, key):
                try:
                    values.append(float(v))
                except (TypeError, ValueError):
                    continue
    return values


def read_pds4(path: Path, limit: int = DEFAULT_MAX_PIXELS) -> PdsImage:
    data = _open_label(path)
    area, node = _pds4_array(data.metadata, path)
    files = _getall(area, "File")
    name = files[0].get("file_name") if files else None
    if not name:
        raise FrameError(f"PDS4 label {path} names no file_name for its image")
    data_path = _data_file(path, str(name))
    kind = (
        str(_getall(node, "Element_Array")[0].get("data_type", "")) if _getall(node, "Element_Array") else ""
    )
    if kind not in _PDS4_TYPES:
        raise FrameError(f"PDS4 label {path} has unsupported data_type '{kind}'")
    dtype = np.dtype(_PDS4_TYPES[kind])
    axes = {
        str(a.get("axis_name", "")).lower(): _int(a.get("elements"), "elements", path)
        for a in _getall(node, "Axis_Array")
    }
    lines, samples, bands = axes.get("line", 0), axes.get("sample", 0), axes.get("band", 1)
    check_pixels(path, samples, lines, limit)
    if bands not in (1, 3):
        raise FrameError(f"PDS4 image of {path} has {bands} bands; frames have 1 or 3")
    offset = _int(node.get("offset", 0), "offset", path)
    _check_extent(path, data_path, offset, lines * samples * bands * dtype.itemsize)
    array = _load(data, str(node.get("local_identifier") or next(iter(data.keys()))), path)
    if array.size != lines * samples * bands or array.ndim not in (2, 3):
        raise FrameError(
            f"PDS4 image of {path} decoded as {array.shape}, its label says {bands}x{lines}x{samples}"
        )
    if array.ndim == 3:  # PDS4 axis order as declared: band first for NAVCAM products
        array = array.reshape(bands, lines, samples)
        array = array[0] if bands == 1 else np.moveaxis(array, 0, -1)
    array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("=")))
    specials = _special_constants(node)
    invalid = np.isin(array, specials) if specials else None
    if invalid is not None:
        array[invalid] = 0
        invalid = invalid.any(axis=-1) if invalid.ndim == 3 else invalid
    bits = None
    for value in _walk(data.metadata, "sample_bit_mask"):
        mask = _mask_value(value)
        if mask:
            bits = mask.bit_length()
            break
    if bits is None:
        for value in _walk(data.metadata, "sample_bits"):
            try:
                bits = int(value)
                break
            except (TypeError, ValueError):
                continue
    return PdsImage(array, bits, invalid)  # a depth beyond the sample width: scale_to_uint8 refuses it


def read_pds_product(path: Path, limit: int = DEFAULT_MAX_PIXELS) -> PdsImage:
    """A PDS3 or PDS4 image product, by its label (a PDS4 label is XML)."""
    if path.stat().st_size == 0:
        raise FrameError(f"empty file: {path}")
    with open(path, "rb") as f:
        head = f.read(256).lstrip()
    is_pds4 = path.suffix.lower() == ".xml" or head.startswith(b"<?xml") or head.startswith(b"<Product")
    return read_pds4(path, limit) if is_pds4 else read_pds3(path, limit)


@register_reader(".img", ".xml", ".lbl")
def read_pds(path: Path, limit: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A PDS3 or PDS4 image product, scaled to 8 bits by its declared depth."""
    image = read_pds_product(path, limit)
    return scale_to_uint8(image.array, image.bits)
