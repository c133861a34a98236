"""Frame files: image files and PDS products, one by one or listed from folders and globs.

`read_frame(path)` returns uint8 HxW (grey) or HxWx3 (RGB) for any registered suffix:

- JPG/PNG/TIFF/BMP through OpenCV; 16-bit PNGs are scaled by their significant bits (the PNG
  `sBIT` chunk) when declared, else by 16 bits (`marsedge.data.readers`);
- PDS3 `.IMG` with an attached label, detached `.LBL`, and PDS4 `.xml` labels (`marsedge.data.pds`).
  MSL NAVCAM EDRs hold 12-bit samples in 16-bit words: the sample depth comes from the label
  (PDS3 `SAMPLE_BIT_MASK`, PDS4 `img:sample_bit_mask` / `img:sample_bits`), never from a constant.

Bounded: a frame over the pixel limit (`readers.DEFAULT_MAX_PIXELS`, 64 MP; `$MARSEDGE_MAX_PIXELS`
or `max_pixels=`) is refused from its header before decoding. `read_frame` raises nothing but
`FrameError` naming the path: whatever a decoder raises (cv2.error, OSError, ValueError,
MemoryError, ...) is turned into one. Readers live in a registry by suffix (`READERS`); add one
with `@register_reader(".ext")` (a reader is `fn(path, max_pixels) -> array`).

Entries of a folder or glob that carry a frame suffix but cannot be read as files (FIFOs, sockets,
symlink loops, dangling links, unreadable entries) are listed by `scan_frames` with the reason they
are skipped. Names are paths relative to the folder (a glob: to its fixed leading folders).
Frames as a stream (videos, cameras, any INPUT) come from `marsedge.data.inputs`, the source registry.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marsedge.data import pds  # noqa: F401  (registers the PDS readers)
from marsedge.data.readers import (  # noqa: F401  (re-exported: the public frame API)
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    READERS,
    check_pixels,
    max_pixels,
    register_reader,
    scale_to_uint8,
)
from marsedge.errors import FrameError


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and its message, whitespace folded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_frame(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """One frame file -> uint8 HxW or HxWx3 RGB. Raises FrameError (only) naming the path."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise FrameError(f"no reader for '{path.suffix}' files: {path} (known: {', '.join(sorted(READERS))})")
    limit = _limit(max_pixels)
    try:
        if not path.is_file():
            raise FrameError(f"frame not found: {path}")
        return reader(path, limit)
    except FrameError as exc:  # a reader's own message; shared helpers (scale_to_uint8) know no path
        if str(path) in str(exc):
            raise
        raise FrameError(f"{exc}: {path}") from None
    except OSError as exc:
        raise FrameError(f"cannot read {path}: {exc.strerror or one_line(exc)}") from None
    except Exception as exc:  # cv2.error, ValueError, MemoryError, ...: one failure type for callers
        raise FrameError(f"cannot decode {path}: {one_line(exc)}") from None


def _limit(value: int | None) -> int:
    return max_pixels(value)  # a module-level helper: `max_pixels` is a parameter name below


@dataclass
class FrameScan:
    """What a file, folder or glob holds: readable frame files and skipped entries with a reason."""

    root: Path | None  # names are relative to it (None: a single file, named by its file name)
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def name(self, path: Path) -> str:
        if self.root is None:
            return path.name
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name


def _entry_kind(path: Path) -> str | None:
    """None for a regular file (links followed), else why the entry cannot be read as a frame."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return exc.strerror or one_line(exc)  # symlink loop, dangling link, permission denied
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "folder"
    return "not a regular file (FIFO)" if stat.S_ISFIFO(mode) else "not a regular file"


def _special_kind(mode: int) -> str:
    """What a path that is neither a regular file nor a folder is, in words."""
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def _sort_entries(scan: FrameScan, paths: list[Path]) -> FrameScan:
    """Frames among paths; a PDS4 `.xml` or PDS3 `.lbl` hides the data file it describes."""
    candidates = [p for p in paths if p.suffix.lower() in READERS]
    files = []
    for p in candidates:
        why = _entry_kind(p)
        if why is None:
            files.append(p)
        elif why != "folder":
            scan.skipped.append((p, why))
    labels = {p.with_suffix("").as_posix() for p in files if p.suffix.lower() in (".xml", ".lbl")}
    scan.files = sorted(
        p for p in files if not (p.suffix.lower() == ".img" and p.with_suffix("").as_posix() in labels)
    )
    scan.skipped.sort()
    return scan


def glob_root(pattern: str) -> Path:
    """The leading folders of a glob pattern that hold no wildcard: frame names are relative to it."""
    fixed = []
    for part in Path(pattern).parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def scan_frames(uri: str | Path) -> FrameScan:
    """The frame files of a file, a folder (not recursive) or a glob pattern, and what was skipped."""
    text = str(uri)
    path = Path(text)
    try:
        if path.is_file():
            return FrameScan(None, [path])
        if path.is_dir():
            return _sort_entries(FrameScan(path), list(path.iterdir()))
    except OSError as exc:
        raise FrameError(f"cannot list {text}: {exc.strerror or one_line(exc)}") from None
    try:
        mode = os.stat(text).st_mode
    except OSError:
        mode = None
    if mode is not None:  # there, but neither a file nor a folder: reading it could block or never end
        raise FrameError(f"{text} is {_special_kind(mode)}, not a frame file, folder, glob or video")
    if any(ch in text for ch in "*?["):
        scan = FrameScan(glob_root(text))
        if "**" in Path(text).parts:
            pattern = Path(text).parts[len(scan.root.parts) if str(scan.root) != "." else 0:]
            return _sort_entries(scan, _walk_glob(scan.root, pattern, scan.skipped))
        return _sort_entries(scan, [Path(p) for p in glob.glob(text)])
    raise FrameError(f"no such file or folder: {text}")


def _walk_glob(root: Path, pattern: tuple[str, ...], skipped: list[tuple[Path, str]]) -> list[Path]:
    """The entries under root whose path below it matches `pattern` (components; `**` is any number
    of folders), each folder entered once. glob's own `**` follows every link to a folder, so
    `ln -s .. a` or `ln -s . b` sends it round a loop until the path is too long (minutes, growing
    memory, one file found under endless names). Here the real folders are walked first; then each
    link to a folder not walked yet (one outside the tree) is walked once; a link to a folder
    already walked or to one that holds the tree (a loop, or a second path to one folder) is
    skipped with its reason, and so is a folder that cannot be listed (glob passes over those
    without a word)."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    links: list[Path] = []

    def record(exc: OSError) -> None:
        skipped.append((Path(exc.filename), f"cannot list folder: {exc.strerror or one_line(exc)}"))

    def walk(top: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(top, onerror=record):  # enters no link itself
            folder = Path(dirpath)
            found.extend(folder / name for name in filenames)
            kept = []
            for name in dirnames:
                if (folder / name).is_symlink():
                    links.append(folder / name)
                elif _identity(folder / name) not in seen:  # (a bind mount can show a folder twice)
                    seen.add(_identity(folder / name))
                    kept.append(name)
            dirnames[:] = kept

    if not root.is_dir():
        return []
    holders = {_identity(folder) for folder in root.resolve().parents}  # what holds the tree
    seen.add(_identity(root))
    walk(root)
    while links:
        link = links.pop(0)
        target = _identity(link)
        if target in seen or target in holders:
            skipped.append((link, "link to a folder already listed or holding this one (a loop, or a "
                                  "second path to it): not followed"))
            continue
        seen.add(target)
        walk(link)
    return [p for p in found if _matches(p.relative_to(root).parts, pattern)]


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """glob's rules for one path: `**` spans any number of folders, another component matches as
    fnmatch does, and a hidden name (leading dot) only matches a pattern that starts with a dot."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(parts[i:], rest) for i in range(len(parts) + 1)
                   if not any(p.startswith(".") for p in parts[:i]))
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _matches(parts[1:], rest)


def list_frames(uri: str | Path) -> list[Path]:
    """The readable frame files of a file, a folder (not recursive) or a glob pattern, sorted."""
    files = scan_frames(uri).files
    if not files:
        raise FrameError(f"no frames ({', '.join(sorted(READERS))}) in {uri}")
    return files
