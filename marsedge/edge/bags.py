"""Recorded bags as a frame source: rosbag2 (a folder with metadata.yaml, or one .mcap / .db3 file)
and ROS 1 `.bag`, read with `rosbags` (pure Python: no ROS installation on the reading machine).

    edge-run run.mcap out/ --model student.int8.onnx --topic /navcam/left/image_raw
    edge-run rosbag2_2026_01_01/ out/ --model student.int8.onnx --topic /navcam/left/image_raw

One topic of `sensor_msgs/Image` is read, in the bag's order; each message becomes a frame named by
its header stamp (`<seconds>.<nanoseconds>`, the bag's receive time when the stamp is zero), so
outputs are named by the time the camera took the frame. A message that cannot be read (an
unsupported encoding, a wrong step, a deserialisation error) is that frame's failure, like a broken
file. A topic that is missing or is not an image is one error line listing the bag's image topics.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from marsedge.data.inputs import Item, Request, Source, register_source
from marsedge.edge.ros_image import IMAGE_TYPES, image_from_msg
from marsedge.errors import ConfigError, DataError

BAG_SUFFIXES = (".mcap", ".db3", ".bag")


def is_bag(path: str | Path) -> bool:
    """A bag file by its suffix, or a rosbag2 folder (it holds metadata.yaml)."""
    path = Path(path)
    return path.suffix.lower() in BAG_SUFFIXES or (path.is_dir() and (path / "metadata.yaml").is_file())


def _open_reader(path: Path):
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise ConfigError(f"INPUT {path}: needs rosbags: pip install 'marsedge[bags]'") from None
    if not path.exists():
        raise DataError(f"bag not found: {path}")
    try:  # a rosbag2 sqlite bag may carry no message definitions: ROS 2 Jazzy's are the default
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    except Exception as exc:  # rosbags' own errors, a foreign file with a bag's suffix
        raise DataError(f"cannot read bag {path}: {' '.join(str(exc).split())}") from None
    return reader


def image_topics(reader) -> list[str]:
    return sorted({c.topic for c in reader.connections if c.msgtype in IMAGE_TYPES})


def frame_name(msg, timestamp: int) -> str:
    """`<seconds>.<nanoseconds>` of the header stamp, else of the bag's receive time."""
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    sec, nsec = (int(stamp.sec), int(stamp.nanosec)) if stamp is not None else (0, 0)
    if sec == 0 and nsec == 0:
        sec, nsec = divmod(int(timestamp), 1_000_000_000)
    return f"{sec:010d}.{nsec:09d}"


def bag_passes(uri: str, topic: str | None):
    """(the topic read, a `passes()` callable yielding `Item`s), after checking the topic."""
    path = Path(uri)
    reader = _open_reader(path)
    try:
        images = image_topics(reader)
        listed = ", ".join(images) if images else "none"
        if topic is None:
            raise ConfigError(f"INPUT {uri} is a bag: name its image topic with --topic "
                              f"(image topics: {listed})")
        types = {c.msgtype for c in reader.connections if c.topic == topic}
        if not types:
            raise ConfigError(f"--topic {topic}: not in {uri} (image topics: {listed})")
        if not types & set(IMAGE_TYPES):
            raise ConfigError(f"--topic {topic}: {', '.join(sorted(types))} is not sensor_msgs/Image "
                              f"(image topics: {listed})")
    finally:
        reader.close()

    def passes() -> Iterator[Item]:
        bag = _open_reader(path)
        try:
            connections = [c for c in bag.connections if c.topic == topic]
            for connection, timestamp, raw in bag.messages(connections=connections):
                try:
                    msg = bag.deserialize(raw, connection.msgtype)
                    name = frame_name(msg, timestamp)
                except Exception as exc:
                    yield Item(frame_name(None, timestamp), error=f"cannot deserialise the message: {exc}")
                    continue
                try:
                    yield Item(name, image=image_from_msg(msg))
                except Exception as exc:  # the message's failure (FrameError: encoding, step, size)
                    yield Item(name, error=f"{topic} at {name}: {exc}")
        finally:
            bag.close()

    return topic, passes


def _names_a_bag(request: Request) -> bool:
    return not request.follow and (request.topic is not None or is_bag(request.uri))


@register_source("bag", resumable=True, matches=_names_a_bag, priority=1)
def bag_source(request: Request) -> Source:
    """A bag read with --topic: resumable, its frames are named by their stamps."""
    if not is_bag(request.uri):
        raise ConfigError(f"INPUT {request.uri}: --topic reads a bag (.mcap, .db3, a rosbag2 folder, .bag)")
    _, passes = bag_passes(request.uri, request.topic)
    return Source(request.uri, passes)
