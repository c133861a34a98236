"""INPUT: one registry of frame sources, and the one capture loop (OpenCV video and cameras).

A frame source is registered once, with how it recognises INPUT and whether `--resume` can continue
it (`resumable`: its frames have stable names, so a rerun can leave out what OUTPUT already holds):

    @register_source("fake", schemes=("fake",), resumable=False)
    def fake(request: Request) -> Source:
        return Source(request.uri, passes=...)

`open_source(uri, ...)` asks each registered source, in registration order, whether it recognises
the request (its `schemes`, else its `matches(request)`; a higher `priority` first), and opens the
first that does; a local
path that none claims is files (a file, a folder sorted, a glob). Registered here: files, video
files and cameras (`/dev/videoN`, `v4l2://`); the rover runtime adds csi://, rtsp://
(`marsedge.edge.sources`), bags (`edge.bags`) and the followed folder (`edge.follow`).

A source's `passes()` yields `Item`s, one pass over its frames; `Source.items` is the one loop over
passes (`loop`, `max_frames`, and the names `--resume` leaves out). `iter_frames(uri)` is the same
sources as `(name, frame or FrameError)`, frames decoded, for code that wants arrays.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

from marsedge.data import frames
from marsedge.errors import ConfigError, FrameError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
CAMERA = re.compile(r"^/dev/video(\d+)$")  # a V4L2 device, the one place its form is written


class EndedEarly(FrameError):
    """A video file that ends before the frame count its header declares (a truncated file)."""


@dataclass
class Item:
    """One input: `name` (path relative to INPUT, or a stream frame's name), and either a `path` to
    decode in the reader stage or an already captured `image`, or the `error` that stopped it."""

    name: str
    path: Path | None = None
    image: np.ndarray | None = None
    error: str | None = None


@dataclass
class Source:
    """An opened input. `items(skip)` yields every frame once per pass (again and again with `loop`);
    names in `skip` are left out of the first pass (what `--resume` found complete)."""

    uri: str
    passes: Callable[[], Iterator[Item]]
    resumable: bool = False  # its registration's: frames have stable names, --resume may skip some
    skipped: list[dict] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)  # ends an endless source (--follow)
    ended_early: list[str] = field(default_factory=list)  # a truncated video says so here (and per frame)

    def items(self, loop: bool = False, max_frames: int | None = None,
              skip: set[str] | frozenset = frozenset()) -> Iterator[Item]:
        count, first = 0, True
        while True:
            produced = False
            for item in self.passes():
                if first and item.name in skip:
                    continue
                if max_frames is not None and count >= max_frames:
                    return
                produced = True
                count += 1
                yield item
            first = False
            if not loop or (not produced and not skip):
                return
            skip = frozenset()


@dataclass(frozen=True)
class Request:
    """What INPUT was given with: the path or URI, OUTPUT to keep out, a bag's `topic`, `follow`."""

    uri: str
    exclude: Path | None = None
    topic: str | None = None
    follow: bool = False
    settle: float = 1.0
    max_pixels: int | None = None
    skipped_as_frames: bool = False  # a folder's unreadable entries as failed frames, in order

    @property
    def scheme(self) -> str:
        return urlparse(self.uri).scheme.lower() if "://" in self.uri else ""


@dataclass(frozen=True)
class SourceType:
    name: str
    open: Callable[[Request], Source]
    resumable: bool
    schemes: tuple[str, ...] = ()
    matches: Callable[[Request], bool] | None = None
    priority: int = 0  # asked before lower priorities: a source an option selects (--topic, --follow)

    def recognises(self, request: Request) -> bool:
        return request.scheme in self.schemes or (self.matches is not None and self.matches(request))


SOURCES: dict[str, SourceType] = {}


def register_source(name: str, *, resumable: bool, schemes: tuple[str, ...] = (),
                    matches: Callable[[Request], bool] | None = None, priority: int = 0):
    """Register `fn(request) -> Source` as the source for INPUTs with one of `schemes` or that
    `matches(request)`; `resumable` says whether --resume can continue it."""

    def add(fn: Callable[[Request], Source]) -> Callable[[Request], Source]:
        SOURCES[name] = SourceType(name, fn, resumable, tuple(schemes), matches, priority)
        return fn

    return add


def find_source(request: Request) -> SourceType:
    """The registered source that recognises the request; files for a local path none claims."""
    for kind in sorted(SOURCES.values(), key=lambda k: -k.priority):  # stable: registration order
        if kind.name != "files" and kind.recognises(request):
            return kind
    if request.scheme not in ("", "file"):
        known = sorted({"file", *(s for kind in SOURCES.values() for s in kind.schemes)})
        raise ConfigError(f"INPUT {request.uri}: unknown scheme {request.scheme}:// "
                          f"(known: {', '.join(known)})")
    return SOURCES["files"]


def open_source(uri: str | Path, **options) -> Source:
    """INPUT (a path or a URI) -> Source, through the registry. `options` are `Request`'s fields."""
    request = Request(str(uri), **options)
    kind = find_source(request)
    source = kind.open(request)
    source.resumable = kind.resumable  # declared once, where the source is registered
    return source


def local_path(request: Request) -> str:
    """The path a file:// URI or a plain INPUT names."""
    if request.scheme == "file":
        parsed = urlparse(request.uri)
        return unquote(parsed.netloc + parsed.path)
    return request.uri


# ------------------------------------------------------------------------------------------ files


@register_source("files", resumable=True)
def file_source(request: Request) -> Source:
    """A file, a folder (sorted) or a glob, listed by `frames.scan_frames` (one listing rule)."""
    text = local_path(request)
    scan = frames.scan_frames(text)
    paths = scan.files
    if request.exclude is not None:  # OUTPUT inside INPUT: never read our own masks back
        out = request.exclude.resolve()
        paths = [p for p in paths if out not in p.resolve().parents]
    skipped = [{"path": str(p), "reason": why} for p, why in scan.skipped]
    if request.skipped_as_frames and skipped:
        named = sorted([*((p, None) for p in paths), *scan.skipped])
        listed = [Item(scan.name(p), path=p) if why is None
                  else Item(scan.name(p), error=f"skipped {p}: {why}") for p, why in named]
        return Source(text, lambda: iter(listed))
    if not paths:
        why = f" ({len(skipped)} entries skipped, first: {skipped[0]['reason']})" if skipped else ""
        raise FrameError(f"no frames ({', '.join(sorted(frames.READERS))}) in {text}{why}")
    named_items = [Item(scan.name(p), path=p) for p in paths]
    return Source(text, lambda: iter(named_items), skipped=skipped)


def frame_files(uri: str | Path) -> list[Path]:
    """The frame files INPUT names, through the registry: a source of files (a file, a folder, a
    glob); a stream (a video, a camera, a bag) is refused, it has no files to pick from."""
    request = Request(str(uri))
    if find_source(request).name != "files":  # never open a camera or play a video to list it
        raise ConfigError(f"{uri}: not a file, folder or glob of frames")
    return [item.path for item in file_source(request).passes()]


# ------------------------------------------------------------------------------- video and cameras


def capture_frames(open_capture: Callable[[], cv2.VideoCapture], name: str, uri: str,
                   limit: int, declared: bool = True) -> Iterator[tuple[str, np.ndarray | FrameError]]:
    """One pass over an OpenCV capture (a video file, a camera, a GStreamer or FFmpeg stream) as
    (name_NNNNNN, RGB frame), bounded by `limit` pixels per frame; a failure ends it as
    (name, FrameError). A video that ends before the frame count its header `declared` ends with
    EndedEarly."""
    try:
        cap = open_capture()
    except Exception as exc:
        yield name, FrameError(f"cannot open video source {uri}: {frames.one_line(exc)}")
        return
    try:
        if not cap.isOpened():
            yield name, FrameError(f"cannot open video source {uri}")
            return
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if declared else 0  # a camera declares none
        index = 0
        while True:
            if index == 0 and width > 0 and height > 0:
                frames.check_pixels(uri, width, height, limit)  # the stream's header, before a frame
            try:
                ok, frame = cap.read()
            except Exception as exc:
                why = f"cannot read frame {index} of {uri}: {frames.one_line(exc)}"
                yield f"{name}_{index:06d}", FrameError(why)
                return
            if not ok:
                if index == 0:
                    yield name, FrameError(f"no frames could be read from {uri}")
                elif index < count:  # the decoder just stops; only the header tells
                    yield f"{name}_{index:06d}", EndedEarly(
                        f"{uri} ended early: {index} of the {count} frames its header declares were read")
                return
            frames.check_pixels(uri, frame.shape[1], frame.shape[0], limit)
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame
            yield f"{name}_{index:06d}", frame
            index += 1
    except FrameError as exc:
        yield name, exc
    finally:
        cap.release()


def captured(uri: str, open_capture: Callable[[], cv2.VideoCapture], name: str, limit: int | None = None,
             declared: bool = True) -> Source:
    """A Source over `capture_frames`: a stream, not resumable (its frames have no lasting names)."""
    ended: list[str] = []

    def passes() -> Iterator[Item]:
        for frame_name, frame in capture_frames(open_capture, name, uri, frames.max_pixels(limit), declared):
            if isinstance(frame, EndedEarly) and str(frame) not in ended:
                ended.append(str(frame))
            if isinstance(frame, Exception):
                yield Item(frame_name, error=str(frame))
            else:
                yield Item(frame_name, image=frame)

    return Source(uri, passes, ended_early=ended)


def _is_camera_or_video(request: Request) -> bool:
    text = local_path(request)
    local = request.scheme in ("", "file")
    return local and (bool(CAMERA.match(text)) or text.lower().endswith(VIDEO_SUFFIXES))


@register_source("video", resumable=False, schemes=("v4l2",), matches=_is_camera_or_video)
def video_source(request: Request) -> Source:
    """A video file, or a V4L2 camera as /dev/videoN or v4l2:///dev/videoN (OpenCV)."""
    if request.scheme == "v4l2":
        parsed = urlparse(request.uri)
        text = parsed.path or parsed.netloc
        if not CAMERA.match(text):
            raise ConfigError(f"INPUT {request.uri}: v4l2:// takes a device, e.g. v4l2:///dev/video0")
    else:
        text = local_path(request)
    camera = CAMERA.match(text)
    if camera:
        return captured(text, lambda: cv2.VideoCapture(int(camera.group(1))), f"video{camera.group(1)}",
                        request.max_pixels, declared=False)
    if not Path(text).is_file():
        raise FrameError(f"video not found: {text}")
    return captured(text, lambda: cv2.VideoCapture(text), Path(text).stem, request.max_pixels)


# ------------------------------------------------------------------------------- decoded frames


def iter_frames(uri: str | Path, max_frames: int | None = None, loop: bool = False,
                max_pixels: int | None = None) -> Iterator[tuple[str, np.ndarray | FrameError]]:
    """Frames of any registered INPUT (a file, folder, glob, video, `/dev/videoN`, ...) as
    (name, frame or FrameError), decoded. `loop` starts over at the end (a camera never ends);
    `max_frames` stops after that many. An INPUT that cannot be listed at all raises FrameError."""
    source = open_source(uri, max_pixels=max_pixels, skipped_as_frames=True)
    for item in source.items(loop, max_frames):
        if item.error is not None:
            yield item.name, (EndedEarly if item.error in source.ended_early else FrameError)(item.error)
        elif item.image is not None:
            yield item.name, item.image
        else:
            try:
                yield item.name, frames.read_frame(item.path, max_pixels)
            except FrameError as exc:
                yield item.name, exc
