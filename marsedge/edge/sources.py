"""Where edge-run's frames come from: INPUT as a path or a URI, the way jetson-utils users write it.

    /data/sol1234/  data/**/*.png  frame.png  file:///data/sol1234   files (folder sorted, glob, file)
    run.mp4                                                          a video file
    /dev/video0  v4l2:///dev/video0                                  a V4L2 camera (OpenCV)
    csi://0                                                          a MIPI CSI camera (GStreamer)
    rtsp://host:8554/stream                                          a network stream (OpenCV/FFmpeg)
    run.mcap  run.db3  rosbag2_dir/  run.bag  with --topic T          a recorded bag (marsedge.edge.bags)
    /data/downlink/  with --follow                                   a folder that fills (edge.follow)

Files are listed up front (`frames.scan_frames`) and decoded one by one in the pipeline's reader
stage, for two reasons: each frame is named by its path relative to INPUT (so outputs can be named
without collisions), and entries that must never be opened (FIFOs, sockets, broken links, symlink
loops, unreadable entries) are skipped with a reason that the run's summary lists. Decoding is
`frames.read_frame`; whatever it raises becomes that frame's failure, never the end of the run.
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
from marsedge.edge.bags import bag_passes, is_bag
from marsedge.edge.follow import DEFAULT_SETTLE, follow_passes
from marsedge.errors import ConfigError, FrameError

_CAMERA = re.compile(r"^/dev/video\d+$")


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
    """A listed input. `items(skip)` yields every frame once per pass (again and again with `loop`);
    names in `skip` are left out of the first pass (what `--resume` found complete)."""

    uri: str
    kind: str  # "files" or "stream"
    passes: Callable[[], Iterator[Item]]
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


# ------------------------------------------------------------------------------------------ files


def file_source(text: str, exclude: Path | None = None) -> Source:
    """A file, a folder (sorted) or a glob, listed by `frames.scan_frames` (one listing rule)."""
    scan = frames.scan_frames(text)
    paths = scan.files
    if exclude is not None:  # OUTPUT inside INPUT: never read our own masks back
        out = exclude.resolve()
        paths = [p for p in paths if out not in p.resolve().parents]
    skipped = [{"path": str(p), "reason": why} for p, why in scan.skipped]
    if not paths:
        why = f" ({len(skipped)} entries skipped, first: {skipped[0]['reason']})" if skipped else ""
        raise FrameError(f"no frames ({', '.join(sorted(frames.READERS))}) in {text}{why}")
    named = [(scan.name(p), p) for p in paths]

    def passes() -> Iterator[Item]:
        for name, p in named:
            yield Item(name, path=p)

    return Source(text, "files", passes, skipped)


# ---------------------------------------------------------------------------------------- streams


def _delegated(uri: str, ended_early: list[str]) -> Callable[[], Iterator[Item]]:
    """Video files and /dev/videoN through `frames.iter_frames` (its bounded decoding); a video that
    ends before its declared frame count is noted in `ended_early` as well as failing a frame."""

    def passes() -> Iterator[Item]:
        for name, frame in frames.iter_frames(uri):
            if isinstance(frame, frames.EndedEarly) and str(frame) not in ended_early:
                ended_early.append(str(frame))
            if isinstance(frame, Exception):
                yield Item(str(name), error=str(frame))
            else:
                yield Item(str(name), image=frame)

    return passes


def _captured(open_capture: Callable[[], cv2.VideoCapture], name: str,
              uri: str) -> Callable[[], Iterator[Item]]:
    """Frames of an OpenCV capture that iter_frames does not open (CSI through GStreamer, RTSP)."""

    def passes() -> Iterator[Item]:
        cap = open_capture()
        if not cap.isOpened():
            yield Item(name, error=f"cannot open video source {uri}")
            return
        try:
            limit = frames.max_pixels()
            width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            index = 0
            while True:
                if index == 0 and width > 0 and height > 0:
                    frames.check_pixels(uri, width, height, limit)  # the stream's header, before a frame
                ok, image = cap.read()
                if not ok:
                    if index == 0:
                        yield Item(name, error=f"no frames could be read from {uri}")
                    return
                frames.check_pixels(uri, image.shape[1], image.shape[0], limit)
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image
                yield Item(f"{name}_{index:06d}", image=image)
                index += 1
        except FrameError as exc:
            yield Item(name, error=str(exc))
        finally:
            cap.release()

    return passes


def has_gstreamer() -> bool:
    """Whether this OpenCV was built with GStreamer (what csi:// needs)."""
    return any("GStreamer" in line and "YES" in line for line in cv2.getBuildInformation().splitlines())


def csi_pipeline(sensor: int, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """The GStreamer pipeline jetson-utils opens for csi://N (nvarguscamerasrc on Jetson)."""
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, "
            f"height={height}, framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! "
            "video/x-raw, format=BGR ! appsink drop=1 max-buffers=2")


def _csi(uri: str, parsed) -> Source:
    sensor = (parsed.netloc or parsed.path.strip("/")) or "0"
    if not sensor.isdigit():
        raise ConfigError(f"INPUT {uri}: csi:// takes a sensor number, e.g. csi://0")
    if not has_gstreamer():
        raise ConfigError(f"INPUT {uri}: this OpenCV has no GStreamer support, which csi:// needs; "
                          "use v4l2:///dev/videoN or an OpenCV built with GStreamer")
    pipeline = csi_pipeline(int(sensor))
    return Source(uri, "stream", _captured(lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER),
                                           f"csi{sensor}", uri))


def _v4l2(uri: str, parsed) -> Source:
    device = parsed.path or parsed.netloc
    if not device.startswith("/dev/video"):
        raise ConfigError(f"INPUT {uri}: v4l2:// takes a device, e.g. v4l2:///dev/video0")
    ended: list[str] = []
    return Source(uri, "stream", _delegated(device, ended), ended_early=ended)


def _rtsp(uri: str, parsed) -> Source:
    name = (parsed.hostname or "rtsp").replace(".", "_")
    return Source(uri, "stream", _captured(lambda: cv2.VideoCapture(uri, cv2.CAP_FFMPEG), name, uri))


SCHEMES: dict[str, Callable[..., Source]] = {"csi": _csi, "v4l2": _v4l2, "rtsp": _rtsp, "rtsps": _rtsp}


def input_folder(text: str) -> Path | None:
    """The local folder INPUT reads (a folder, a glob's fixed folders), None for a file or a URI."""
    if "://" in text and not text.startswith("file://"):
        return None
    path = Path(text.removeprefix("file://"))
    if any(ch in text for ch in "*?["):
        return frames.glob_root(str(path))
    return path if path.is_dir() else None


def open_source(uri: str, exclude: Path | None = None, topic: str | None = None, follow: bool = False,
                settle: float = DEFAULT_SETTLE) -> Source:
    """INPUT (a path or a URI) -> Source. An unknown scheme or a missing path is one error line.
    A bag reads `topic`; `follow` watches a folder until the source's `stop` is set."""
    text = str(uri)
    if follow or topic is not None or is_bag(text):
        return _bag_or_followed(text, exclude, topic, follow, settle)
    if "://" in text:
        parsed = urlparse(text)
        scheme = parsed.scheme.lower()
        if scheme == "file":
            text = unquote(parsed.netloc + parsed.path)
        elif scheme in SCHEMES:
            return SCHEMES[scheme](text, parsed)
        else:
            raise ConfigError(f"INPUT {uri}: unknown scheme {scheme}:// (known: file, {', '.join(SCHEMES)})")
    if _CAMERA.match(text) or text.lower().endswith(frames.VIDEO_SUFFIXES):
        if not text.startswith("/dev/") and not Path(text).is_file():
            raise FrameError(f"video not found: {text}")
        ended: list[str] = []
        return Source(text, "stream", _delegated(text, ended), ended_early=ended)
    return file_source(text, exclude=exclude)


def _bag_or_followed(text: str, exclude: Path | None, topic: str | None, follow: bool,
                     settle: float) -> Source:
    if follow:
        if topic is not None or not Path(text).is_dir() or is_bag(text):
            raise ConfigError(f"INPUT {text}: --follow watches a folder of frames"
                              + (" (--topic reads a bag)" if topic is not None else ""))
        stop = threading.Event()
        return Source(text, "files", follow_passes(Path(text), stop, exclude, settle), stop=stop)
    if not is_bag(text):
        raise ConfigError(f"INPUT {text}: --topic reads a bag (.mcap, .db3, a rosbag2 folder, .bag)")
    topic, passes = bag_passes(text, topic)
    return Source(text, "files", passes)
