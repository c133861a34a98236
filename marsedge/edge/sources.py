"""Where edge-run's frames come from: INPUT as a path or a URI, the way jetson-utils users write it.

    /data/sol1234/  data/**/*.png  frame.png  file:///data/sol1234   files (folder sorted, glob, file)
    run.mp4                                                          a video file
    /dev/video0  v4l2:///dev/video0                                  a V4L2 camera (OpenCV)
    csi://0                                                          a MIPI CSI camera (GStreamer)
    rtsp://host:8554/stream                                          a network stream (OpenCV/FFmpeg)
    run.mcap  run.db3  rosbag2_dir/  run.bag  with --topic T          a recorded bag (marsedge.edge.bags)
    /data/downlink/  with --follow                                   a folder that fills (edge.follow)

Each kind is registered once in the frame-source registry (`marsedge.data.inputs.register_source`):
files, videos and cameras there, csi:// and rtsp:// here, bags and the followed folder in their own
modules; importing this module registers them all. A new input is one module with one registration.

Files are listed up front (`frames.scan_frames`) and decoded one by one in the pipeline's reader
stage, for two reasons: each frame is named by its path relative to INPUT (so outputs can be named
without collisions), and entries that must never be opened (FIFOs, sockets, broken links, symlink
loops, unreadable entries) are skipped with a reason that the run's summary lists. Decoding is
`frames.read_frame`; whatever it raises becomes that frame's failure, never the end of the run.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import cv2

import marsedge.edge.bags  # noqa: F401  (registers the bag source)
from marsedge.data import frames
from marsedge.data.inputs import Item, Request, Source, captured, register_source
from marsedge.data.inputs import open_source as open_registered
from marsedge.edge.follow import DEFAULT_SETTLE  # (and registers the followed folder)
from marsedge.errors import ConfigError

__all__ = ["Item", "Source", "csi_pipeline", "has_gstreamer", "input_folder", "open_source"]


def has_gstreamer() -> bool:
    """Whether this OpenCV was built with GStreamer (what csi:// needs)."""
    return any("GStreamer" in line and "YES" in line for line in cv2.getBuildInformation().splitlines())


def csi_pipeline(sensor: int, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """The GStreamer pipeline jetson-utils opens for csi://N (nvarguscamerasrc on Jetson)."""
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, "
            f"height={height}, framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! "
            "video/x-raw, format=BGR ! appsink drop=1 max-buffers=2")


@register_source("csi", resumable=False, schemes=("csi",))
def csi_source(request: Request) -> Source:
    """A MIPI CSI camera, csi://N, through GStreamer."""
    parsed = urlparse(request.uri)
    sensor = (parsed.netloc or parsed.path.strip("/")) or "0"
    if not sensor.isdigit():
        raise ConfigError(f"INPUT {request.uri}: csi:// takes a sensor number, e.g. csi://0")
    if not has_gstreamer():
        raise ConfigError(f"INPUT {request.uri}: this OpenCV has no GStreamer support, which csi:// needs; "
                          "use v4l2:// with the camera's device or an OpenCV built with GStreamer")
    pipeline = csi_pipeline(int(sensor))
    return captured(request.uri, lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER), f"csi{sensor}",
                    request.max_pixels, declared=False)


@register_source("rtsp", resumable=False, schemes=("rtsp", "rtsps"))
def rtsp_source(request: Request) -> Source:
    """A network stream, rtsp://host:port/path, through OpenCV's FFmpeg."""
    name = (urlparse(request.uri).hostname or "rtsp").replace(".", "_")
    return captured(request.uri, lambda: cv2.VideoCapture(request.uri, cv2.CAP_FFMPEG), name,
                    request.max_pixels, declared=False)


def input_folder(text: str) -> Path | None:
    """The local folder INPUT reads (a folder, a glob's fixed folders), None for a file or a URI."""
    if "://" in text and not text.startswith("file://"):
        return None
    path = Path(text.removeprefix("file://"))
    if any(ch in text for ch in "*?["):
        return frames.glob_root(str(path))
    return path if path.is_dir() else None


def open_source(uri: str | Path, exclude: Path | None = None, topic: str | None = None, follow: bool = False,
                settle: float = DEFAULT_SETTLE) -> Source:
    """INPUT (a path or a URI) -> Source, through the registry. An unknown scheme or a missing path
    is one error line. A bag reads `topic`; `follow` watches a folder until the source's `stop` is set."""
    return open_registered(uri, exclude=exclude, topic=topic, follow=follow, settle=settle)
