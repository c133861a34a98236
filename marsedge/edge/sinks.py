"""Where edge-run's results go: OUTPUT's layout, names that cannot collide, reruns, the summary.

    OUTPUT/masks/<input path>.png       class ids at the frame's size, e.g. masks/sol1/NLA_1.JPG.png
    OUTPUT/overlays/<input path>.jpg    class colours (the model's class table) blended over the frame
                                        (every Nth frame with --overlay-every N: `"overlay": null`)
    OUTPUT/confidence/<input path>.png  with --visualize confidence: max softmax probability x 255
    OUTPUT/frames.jsonl                 one line per frame: input name -> mask and overlay paths, class
                                        fractions by the model's class names, hazards (null for a
                                        rule the model cannot judge), per-stage ms; or the frame's error
    OUTPUT/summary.json                 reserved when the run starts ({"status": "running"}), final at the end
    OUTPUT/run.json                     what --resume must find unchanged: the model's sha256,
                                        INPUT and the options that shape the outputs (`run_record`)
    OUTPUT/.marsedge.lock               held by the live run (`marsedge.ownership.OutputLock`)

A frame name that is not valid UTF-8 (a Linux file name may hold any bytes) is written to
frames.jsonl with each undecodable byte as `\\xNN` and, in `name_hex`, its exact bytes: every line
is valid UTF-8 JSON, without lone surrogates (`marsedge.edge.run_record`).

Names come from the path relative to INPUT with subfolders and extension kept (`x.jpg` and `x.png`
stay apart); a name that had to be mapped (unsafe characters, `..`) carries a hash of the original
(`marsedge.io.safe_relpath`), and a case-only clash (FAT/exFAT cards) gets `~2`, `~3` in input order.

A frame's failure is the frame's; a failure of OUTPUT itself (disk full, read-only, permission,
a symlink planted in OUTPUT) is the run's: `SinkError`, exit 3, and the run stops. A `frames.jsonl`
line is written whole or not at all (a failed append is cut back), so the file never ends torn
because of us; a torn line left by a power cut is repaired by `--resume`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from marsedge.edge.confidence import confidence_bytes
from marsedge.edge.run_record import (
    RUN_RECORD,
    check_resume,
    holds_files,
    json_safe,
    name_fields,
    record_name,
)
from marsedge.errors import ConfigError, DataError, MarsedgeError
from marsedge.io import atomic_write_bytes, atomic_write_json, guarded_path, safe_relpath
from marsedge.terrain import palette

VISUALS = {"mask": ("masks", ".png"), "overlay": ("overlays", ".jpg"),  # visual -> (folder, suffix)
           "confidence": ("confidence", ".png")}  # max softmax probability x 255, 8-bit grey
# Encoder settings, chosen by python -m benchmarks.edge_latency --writer-study (cv2.imencode of a 512x512
# mask with 6 smooth regions and its overlay, 2 shared cores, load 4.2). Masks: greyscale 8-bit PNG
# (lossless class ids that any reader gets back as ids; a palette PNG comes back as BGR colours from
# cv2.imread and took 0.9 ms), OpenCV's fast zlib settings with PNG's row filter off: 0.34 ms, 8.4 KB
# on a real 512 px mask (OpenCV's default filter 0.52 ms, 10.3 KB: a mask of flat regions gains
# nothing from predicting pixels), where an explicit level 1 takes 1.5 ms, level 6 2.6 ms, level 9 14 ms.
# Overlays: JPEG quality 95, 4:2:0 (OpenCV's default): 0.63 ms, 96 KB; quality 90 saves 0.07 ms and
# 4:4:4 costs 0.3 ms more, so the overlay stays as it was.
MASK_PNG = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
OVERLAY_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95]
JSONL, SUMMARY = "frames.jsonl", "summary.json"
SUMMARY_RESERVE = 64 * 1024  # bytes kept for the summary from the start (a full disk still gets one)
MAX_RECORDED_FAILURES = 1000  # the summary lists this many failure reasons, then only counts


class SinkError(MarsedgeError):
    """OUTPUT cannot be written (full, read-only, not ours to write through): the run stops."""

    exit_code = 3


def sink_error(exc: BaseException, what: str | Path) -> SinkError:
    """One line for an output failure: the path and the system's reason."""
    if isinstance(exc, OSError):
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return SinkError(f"cannot write {what}: {reason}")
    return SinkError(f"cannot write {what}: {exc}")


class Namer:
    """Input name -> output stem, stable within a run and across `--resume` (preloaded)."""

    def __init__(self, remember_new: bool = True) -> None:
        self.stems: dict[str, str] = {}
        self.taken: dict[str, str] = {}  # casefolded stem -> input name
        self.remember_new = remember_new  # streams name their frames uniquely: no table growth

    def add(self, name: str, stem: str) -> None:
        self.stems[name] = stem
        self.taken[stem.casefold()] = name

    def stem(self, name: str) -> str:
        if name in self.stems:
            return self.stems[name]
        base = stem = safe_relpath(name)
        n = 1
        while self.taken.get(stem.casefold(), name) != name:
            n += 1
            stem = f"{base}~{n}"
        if self.remember_new or stem != base:
            self.add(name, stem)
        return stem


def read_records(path: Path) -> tuple[list[dict], int]:
    """The whole JSON lines of a frames.jsonl, and how many lines were torn or not JSON."""
    if not path.is_file():
        return [], 0
    records, torn = [], 0
    with path.open("rb") as f:
        for raw in f:
            try:
                record = json.loads(raw)
                if not raw.endswith(b"\n") or not isinstance(record, dict):
                    raise ValueError
                records.append(record)
            except ValueError:
                torn += 1
    return records, torn


def _own_path(root: Path, rel: object, visual: str) -> Path | None:
    """The file a record names for `visual`, if it is one edge-run could have written (inside its
    folder, no `..`, no link on the way); None for anything else (a hand-edited or foreign line)."""
    folder, suffix = VISUALS[visual]
    if not isinstance(rel, str) or not rel.startswith(folder + "/") or not rel.endswith(suffix):
        return None
    if ".." in rel.split("/") or "\\" in rel:
        return None
    try:
        return guarded_path(root, rel)
    except DataError:
        return None


def _stem(record: dict, visual: str) -> str:
    folder, suffix = VISUALS[visual]
    return record[visual][len(folder) + 1 : -len(suffix)]


def _complete(root: Path, record: dict, visuals: set[str]) -> bool:
    """Every output the frame's record should have is there (`"overlay": null` is a frame that
    --overlay-every left out, complete without one)."""
    if "error" in record or not isinstance(record.get("name"), str) or not visuals:
        return False
    paths = [_own_path(root, record.get(v), v) for v in visuals if not (v in record and record[v] is None)]
    return all(p is not None and p.is_file() and p.stat().st_size > 0 for p in paths)


def _remove_earlier(root: Path, records: list[dict]) -> int:
    """--overwrite: delete the files an earlier edge-run's records name, its own logs, and the
    folders that this left empty. Nothing else is touched."""
    removed = 0
    paths = [_own_path(root, record.get(v), v) for record in records for v in VISUALS]
    for path in [p for p in paths if p is not None] + [root / JSONL, root / SUMMARY, root / RUN_RECORD]:
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed += 1
    for folder, _ in VISUALS.values():
        for sub in sorted((root / folder).glob("**/"), key=lambda p: -len(p.parts)):
            if sub.is_dir() and not sub.is_symlink() and not any(sub.iterdir()):
                sub.rmdir()
    return removed


def prepare_output(root: Path, visuals: set[str], resume: bool, overwrite: bool,
                   record: dict | None = None) -> tuple[Namer, list[dict]]:
    """Check OUTPUT, apply the rerun rule (--resume: `check_resume` against `record`), reserve the
    summary, write `record` as run.json. The caller holds OUTPUT's lock. Returns the namer
    (preloaded on resume) and the records kept from an earlier run (frames that --resume skips)."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"OUTPUT {root} is a file, not a folder")
    kept: list[dict] = []
    if holds_files(root):
        if not (resume or overwrite):
            raise ConfigError(f"OUTPUT {root} is not empty: pass --resume to continue the earlier run "
                              "or --overwrite to replace what it wrote")
        records, torn = read_records(root / JSONL)
        if resume and record is not None:
            check_resume(root, record, records)
        try:
            if overwrite:
                _remove_earlier(root, records)
            else:
                kept = [r for r in records if _complete(root, r, visuals)]
                if len(kept) != len(records) or torn:  # failed, torn or incomplete lines are redone
                    atomic_write_bytes(root / JSONL, b"".join(json.dumps(r).encode() + b"\n" for r in kept))
        except OSError as exc:
            raise sink_error(exc, root) from None
    namer = Namer()
    for line in kept:
        named = [v for v in sorted(visuals) if isinstance(line.get(v), str)]
        if named:
            namer.add(record_name(line), _stem(line, named[0]))
    try:
        root.mkdir(parents=True, exist_ok=True)
        reserve_summary(root / SUMMARY)
        if record is not None:
            atomic_write_json(guarded_path(root, RUN_RECORD), json_safe(record))
    except OSError as exc:
        raise sink_error(exc, root) from None
    return namer, kept


def reserve_summary(path: Path) -> None:
    """Write a valid placeholder summary padded to SUMMARY_RESERVE bytes: the blocks are ours, so
    the final summary fits even when the disk fills during the run."""
    text = json.dumps({"status": "running"}).encode()
    with guarded_path(path.parent, path.name).open("wb") as f:
        f.write(text + b" " * (SUMMARY_RESERVE - len(text) - 1) + b"\n")
        f.flush()
        os.fsync(f.fileno())


def write_summary(path: Path, summary: dict) -> str | None:
    """Atomically when the disk allows; else in place, into the reserved blocks (failure list cut
    to fit). Returns None, or the reason no summary could be written."""
    summary = json_safe(summary)
    try:
        atomic_write_json(path, summary)
        return None
    except OSError:
        pass
    summary = dict(summary)
    while True:
        data = json.dumps(summary, default=str).encode() + b"\n"
        if len(data) <= SUMMARY_RESERVE or not summary.get("failures"):
            break
        summary["failures"] = summary["failures"][: len(summary["failures"]) // 2]
        summary["failures_truncated"] = True
    try:
        with path.open("r+b") as f:
            f.write(data)
            f.truncate(len(data))
            f.flush()
            os.fsync(f.fileno())
        return None
    except OSError as exc:
        return f"cannot write {path}: {os.strerror(exc.errno) if exc.errno else exc}"


class Writer:
    """The writing stage: masks, overlays and frames.jsonl lines, and the running counts.

    `write(frame)` records the frame (ok or failed) or raises SinkError; counts are read by the
    supervisor under `lock` while this thread may still be busy."""

    def __init__(self, root: Path, visuals: set[str], alpha: float, class_table: list[dict],
                 namer: Namer | None = None, overlay_every: int = 1) -> None:
        self.root, self.visuals, self.alpha = Path(root), set(visuals), alpha
        self.bgr_lut = np.ascontiguousarray(palette(class_table)[:, ::-1])  # 256 ids -> BGR
        self.overlay_every = max(1, int(overlay_every))
        self.channel_luts = [np.ascontiguousarray(self.bgr_lut[:, ch]) for ch in range(3)]  # B, G, R
        self.namer = namer or Namer()
        self.ok = self.failed = 0
        self.failures: list[dict] = []
        self.lock = threading.Lock()
        self._jsonl = None

    def _append(self, record: dict) -> None:
        line = (json.dumps(json_safe(record), default=str) + "\n").encode()
        path = self.root / JSONL
        try:
            if self._jsonl is None:
                self._jsonl = guarded_path(self.root, JSONL).open("ab")
            start = self._jsonl.tell()
            try:
                self._jsonl.write(line)
                self._jsonl.flush()
            except OSError:
                self._jsonl.truncate(start)  # never leave a torn line behind
                raise
        except OSError as exc:
            raise sink_error(exc, path) from None

    def _encode(self, frame) -> dict[str, bytes]:
        """Per-frame work that can fail for the frame alone (a cv2 error, a wrong-shaped mask)."""
        mask = frame.mask  # at the frame's size already (marsedge.edge.predict's policy)
        if mask is None and "class" in frame.record:  # an image classifier: its line is its output
            return {}
        if mask.shape[:2] != frame.image.shape[:2]:
            raise ValueError(f"mask {mask.shape[:2]} is not at the frame's size {frame.image.shape[:2]}")
        out = {}
        if "mask" in self.visuals:
            out["mask"] = cv2.imencode(".png", mask, MASK_PNG)[1].tobytes()
        if "confidence" in self.visuals:
            grey = confidence_bytes(frame.confidence)
            out["confidence"] = cv2.imencode(".png", grey, MASK_PNG)[1].tobytes()
        if "overlay" in self.visuals and frame.index % self.overlay_every == 0:
            out["overlay"] = cv2.imencode(".jpg", self.overlay(frame.image, mask), OVERLAY_JPEG)[1].tobytes()
        return out

    def overlay(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """BGR blend of the class colours over the frame: what cv2.addWeighted gives, byte for byte.
        A greyscale frame (every NAVCAM camera) is blended one colour channel at a time: the class
        colour of each pixel by an 8-bit cv2.LUT, addWeighted with the grey frame, the three planes
        merged: 0.38 ms at 512 px, where a (class, grey) -> BGR table gather took 0.9 ms and repeat to
        RGB + palette gather + addWeighted + cvtColor 2.5-4.4 ms (python -m benchmarks.edge_latency
        --writer-study)."""
        if image.ndim == 2 and image.dtype == np.uint8 and mask.dtype == np.uint8:
            return cv2.merge([cv2.addWeighted(image, 1 - self.alpha, cv2.LUT(mask, lut), self.alpha, 0)
                              for lut in self.channel_luts])
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.ndim == 3 else cv2.COLOR_GRAY2BGR)
        return cv2.addWeighted(bgr, 1 - self.alpha, self.bgr_lut[mask], self.alpha, 0)

    def encode(self, frame) -> None:
        """The frame's files as bytes in `frame.encoded`, or its `error`. Touches no file and no
        state of the writer's, so that `--encoders` threads can run it on several frames at once."""
        start = time.perf_counter()
        try:
            frame.encoded = self._encode(frame)
        except (cv2.error, ValueError, IndexError, TypeError, AttributeError) as exc:
            frame.error = f"encoding failed: {type(exc).__name__}: {str(exc)[:200]}"
        frame.ms["encode"] = 1000 * (time.perf_counter() - start)

    def write(self, frame) -> None:
        """Write one frame's outputs (encoding them first unless `encode` has) and its line, in the
        order frames come. SinkError when OUTPUT itself failed."""
        if frame.error is None and frame.encoded is None:
            self.encode(frame)
        start = time.perf_counter()
        if frame.error is not None:
            # "failed", as summary.json counts it
            print(f"failed {frame.name}: {frame.error}", file=sys.stderr, flush=True)
            self._append({**name_fields(frame.name), "index": frame.index, "error": frame.error})
            with self.lock:
                self.failed += 1
                if len(self.failures) < MAX_RECORDED_FAILURES:
                    self.failures.append({**name_fields(frame.name), "reason": frame.error})
            return
        stem = self.namer.stem(frame.name)  # here, in input order: a case-only clash numbers alike
        paths = {}
        encoded, frame.encoded = frame.encoded, None
        for visual, data in encoded.items():
            folder, suffix = VISUALS[visual]
            rel = f"{folder}/{stem}{suffix}"
            try:
                target = guarded_path(self.root, rel)
            except DataError as exc:
                raise SinkError(f"{exc} (planted in OUTPUT?)") from None
            try:
                atomic_write_bytes(target, data)  # makes the folder too
            except OSError as exc:
                raise sink_error(exc, target) from None
            paths[visual] = rel
        if "overlay" in self.visuals and "overlay" not in paths and frame.mask is not None:
            paths["overlay"] = None  # left out by --overlay-every
        frame.ms["write"] = 1000 * (time.perf_counter() - start)
        self._append({**name_fields(frame.name), "index": frame.index, **paths, **frame.record,
                      "ms": {k: round(v, 3) for k, v in frame.ms.items()}})
        with self.lock:
            self.ok += 1

    def close(self) -> None:
        if self._jsonl is not None:
            with contextlib.suppress(OSError):
                self._jsonl.close()
            self._jsonl = None

