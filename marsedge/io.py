"""Small file helpers every long job uses: atomic writes and output paths that cannot escape.

A crash mid-write must never leave a half-written checkpoint, mask or report: everything is
written to a temporary file in the same folder and renamed into place (rename is atomic on POSIX).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from marsedge.errors import DataError, MarsedgeError, WriteError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], None], replace: bool = True) -> Path:
    """Call `write(tmp_path)` then rename tmp_path onto `path`. The temp file keeps the suffix.

    replace=False: a file that appeared at `path` while `write` ran (a long export or quantize) is
    kept; this result is kept too, beside it, and an OutputAppeared error names both."""
    path = Path(path)
    with _replacing(path, replace) as (fd, tmp):
        os.close(fd)
        write(tmp)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, replace: bool = True) -> Path:
    """`atomic_write` for bytes in hand, written through the temp file's own descriptor (one open):
    edge-run writes two files per frame on cores its runtime is using."""
    path = Path(path)
    with _replacing(path, replace) as (fd, _), os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


class OutputAppeared(MarsedgeError):
    """The output path was free when the command started and taken when it finished."""

    exit_code = 1

    def __init__(self, path: Path, kept: Path):
        super().__init__(f"{path}: appeared while this command ran and was not replaced; "
                         f"this run's result is {kept}")
        self.path, self.kept = path, kept


def _publish(tmp: str, path: Path, replace: bool) -> None:
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic: fails if `path` exists, unlike a rename
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: check, then rename (a narrow race remains)
        if not path.exists():
            os.replace(tmp, path)
            return
    else:
        os.unlink(tmp)
        return
    kept = path.with_name(f"{path.stem}.{os.getpid()}{path.suffix}")
    os.replace(tmp, kept)
    raise OutputAppeared(path, kept) from None


@contextmanager
def _replacing(path: Path, replace: bool = True) -> Iterator[tuple[int, Path]]:
    """A temp file beside `path` (its folder made when missing, the usual permissions), renamed onto
    `path` when the block ends well (never onto a file that appeared meanwhile when `replace` is
    False) and removed when it raises."""
    try:
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        except FileNotFoundError:  # no mkdir call while the folder exists (the common case)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    except OSError as exc:  # a read-only or full folder
        raise WriteError(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files
        yield fd, Path(tmp)
        _publish(tmp, path, replace)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(path, exc) from None  # "cannot write PATH: No space left on device"
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and flush it (metrics logs survive a crash line by line)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
    except OSError as exc:
        raise WriteError(path, exc) from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (teacher checkpoints and engines can be ~1 GiB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A frame name from data made safe as one path component: `../x/y.png` -> `x_y.png`."""
    parts = [p for p in re.split(r"[\\/]+", str(name)) if p not in ("", ".", "..")]
    cleaned = _UNSAFE.sub("_", "_".join(parts)).strip("._")
    return cleaned or "frame"


def safe_join(root: str | Path, name: str) -> Path:
    """`root / safe_name(name)`, checked to lie inside root (paths from data never escape it)."""
    root = Path(root).resolve()
    out = (root / safe_name(name)).resolve()
    if root != out.parent:
        raise DataError(f"output name {name!r} would escape {root}")
    return out


_MAX_COMPONENT = 120  # characters kept of one mapped path component (filesystems allow 255 bytes)


def safe_relpath(rel: str) -> str:
    """A relative path from data -> a relative output path that cannot escape, collide or overflow.

    Subfolders and the extension are kept (`sol1/x.png` -> `sol1/x.png`); `..`, `.` and empty
    components are dropped and unsafe characters mapped to `_`. Whenever the mapping changed
    anything, `~` and a hash of the original path are appended, so `a b.png` and `a_b.png` (or two
    non-ASCII names) never meet: a mapped name carries a `~`, which an unmapped one cannot.
    """
    text = str(rel)
    parts = [p for p in re.split(r"[\\/]+", text) if p not in ("", ".", "..")]
    mapped = [(_UNSAFE.sub("_", p).lstrip(".") or "_")[:_MAX_COMPONENT] for p in parts] or ["frame"]
    out = "/".join(mapped)
    if out != text:
        out += "~" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return out


def guarded_path(root: str | Path, rel: str) -> Path:
    """`root / rel` for an already safe `rel`, refused (DataError) when any existing component on the
    way, the file itself included, is a symlink or not a folder: something planted in an output
    folder must not redirect a write outside it."""
    root = Path(root)
    path = root
    parts = Path(rel).parts
    for i, part in enumerate(parts):
        path = path / part
        if path.is_symlink():
            raise DataError(f"output path {path} is a symbolic link; refusing to write through it")
        if i < len(parts) - 1 and path.exists() and not path.is_dir():
            raise DataError(f"output path {path} is not a folder")
    return path


def non_finite(value: Any, where: str = "") -> str | None:
    """Where in JSON data the first NaN or infinite number is (`.gain`, `[2].colour[0]`), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or " value"
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found = non_finite(item, f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]")
        if found is not None:
            return found
    return None
