"""Recorded bags as edge-run's input: an MCAP and a sqlite3 rosbag2 bag and a ROS 1 bag written
with rosbags give the masks that the same frames give as PNG files, named by their header stamps."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from ros_support import fields, frames, stamp_name, write_file

from marsedge.edge.run import main

rosbags = pytest.importorskip("rosbags", reason="rosbags is not installed (pip install 'marsedge[bags]')")
from rosbags.rosbag1 import Writer as Writer1  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

TOPIC = "/navcam/left/image_raw"


def messages(tiny_ai4mars, n: int = 6) -> list[tuple[int, object, str, np.ndarray]]:
    """(timestamp ns, sensor_msgs/Image, encoding, samples): every encoding, padded rows, both
    mono16 byte orders."""
    store = get_typestore(Stores.ROS2_JAZZY)
    Image, Header, Time = (store.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                    "builtin_interfaces/msg/Time"))
    out = []
    for i, (encoding, samples) in enumerate(frames(tiny_ai4mars, n)):
        f = fields(encoding, samples, pad=4 * (i % 2), bigendian=i == 1)
        header = Header(stamp=Time(sec=1_700_000_000 + i, nanosec=1000 * i), frame_id="navcam_left")
        msg = Image(header=header, height=f["height"], width=f["width"], encoding=encoding,
                    is_bigendian=int(f["is_bigendian"]), step=f["step"],
                    data=np.frombuffer(f["data"], np.uint8))
        out.append(((1_700_000_000 + i) * 10**9 + 5, msg, encoding, samples))
    return out


def write_rosbag2(path, msgs, plugin, typestore) -> None:
    with Writer(path, version=9, storage_plugin=plugin) as bag:
        images = bag.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=typestore)
        text = bag.add_connection("/rover/status", "std_msgs/msg/String", typestore=typestore)
        for stamp, msg, _, _ in msgs:
            bag.write(images, stamp, typestore.serialize_cdr(msg, "sensor_msgs/msg/Image"))
        bag.write(text, msgs[0][0], typestore.serialize_cdr(typestore.types["std_msgs/msg/String"](data="ok"),
                                                             "std_msgs/msg/String"))


def masks_of(out) -> dict[str, np.ndarray]:
    lines = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert all("error" not in r for r in lines), lines
    return {r["name"]: cv2.imread(str(out / r["mask"]), cv2.IMREAD_UNCHANGED) for r in lines}


def run(model, source, out, *extra) -> int:
    return main([str(source), str(out), "--model", str(model), "--threads", "1", "--streams", "1",
                 "--visualize", "mask", "--backend-probe", "0", *extra])


@pytest.fixture()
def reference(edge_student, tiny_ai4mars, tmp_path):
    """The bag's frames as PNG files through edge-run: stamp name -> mask."""
    msgs = messages(tiny_ai4mars)
    for _, msg, encoding, samples in msgs:
        stamp = msg.header.stamp
        write_file(tmp_path / "png", stamp_name(stamp.sec, stamp.nanosec), encoding, samples)
    assert run(edge_student[1], tmp_path / "png", tmp_path / "png_out") == 0
    return msgs, {name.removesuffix(".png"): m for name, m in masks_of(tmp_path / "png_out").items()}


def test_mcap_and_sqlite_bags_give_the_masks_of_the_same_png_frames(edge_student, reference, tmp_path):
    msgs, expected = reference
    store = get_typestore(Stores.ROS2_JAZZY)
    write_rosbag2(tmp_path / "mcap_bag", msgs, StoragePlugin.MCAP, store)
    write_rosbag2(tmp_path / "sqlite_bag", msgs, StoragePlugin.SQLITE3, store)
    mcap_file = next((tmp_path / "mcap_bag").glob("*.mcap"))
    for source in (mcap_file, tmp_path / "sqlite_bag"):  # a bare .mcap file and a rosbag2 folder
        out = tmp_path / f"out_{source.name}"
        assert run(edge_student[1], source, out, "--topic", TOPIC) == 0
        got = masks_of(out)
        assert sorted(got) == sorted(expected)  # named by the header stamps
        for name, mask in got.items():
            assert np.array_equal(mask, expected[name]), f"{source.name} {name}"


def test_ros1_bag(edge_student, reference, tmp_path):
    msgs, expected = reference
    store = get_typestore(Stores.ROS1_NOETIC)
    with Writer1(tmp_path / "run.bag") as bag:
        conn = bag.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store)
        Image, Header, Time = (store.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                        "builtin_interfaces/msg/Time"))
        for stamp, msg, _, _ in msgs:
            time = Time(sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec)
            ros1 = Image(header=Header(seq=0, stamp=time, frame_id=msg.header.frame_id), height=msg.height,
                         width=msg.width, encoding=msg.encoding, is_bigendian=msg.is_bigendian, step=msg.step,
                         data=msg.data)
            bag.write(conn, stamp, store.serialize_ros1(ros1, "sensor_msgs/msg/Image"))
    assert run(edge_student[1], tmp_path / "run.bag", tmp_path / "out", "--topic", TOPIC) == 0
    got = masks_of(tmp_path / "out")
    assert sorted(got) == sorted(expected)
    assert all(np.array_equal(mask, expected[name]) for name, mask in got.items())


@pytest.mark.parametrize("topic, why", [("/navcam/right/image_raw", "not in"),
                                        ("/rover/status", "std_msgs/msg/String is not sensor_msgs/Image"),
                                        (None, "name its image topic with --topic")])
def test_a_missing_or_non_image_topic_is_one_line_listing_the_image_topics(
        edge_student, tiny_ai4mars, tmp_path, capsys, topic, why):
    store = get_typestore(Stores.ROS2_JAZZY)
    write_rosbag2(tmp_path / "bag", messages(tiny_ai4mars, 1), StoragePlugin.SQLITE3, store)
    rc = run(edge_student[1], tmp_path / "bag", tmp_path / "out", *(["--topic", topic] if topic else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert why in err[0] and f"(image topics: {TOPIC})" in err[0]


def test_a_malformed_message_is_a_failed_frame(edge_student, tiny_ai4mars, tmp_path):
    store = get_typestore(Stores.ROS2_JAZZY)
    msgs = messages(tiny_ai4mars, 2)
    msgs[0][1].step = msgs[0][1].width - 1  # shorter than a row
    write_rosbag2(tmp_path / "bag", msgs, StoragePlugin.MCAP, store)
    assert run(edge_student[1], tmp_path / "bag", tmp_path / "out", "--topic", TOPIC) == 0
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["frames_ok"] == 1 and summary["frames_failed"] == 1
    assert "wrong step" in summary["failures"][0]["reason"]


def test_topic_on_a_folder_of_frames_is_a_usage_error(edge_student, tiny_ai4mars, tmp_path, capsys):
    folder = tmp_path / "frames"
    write_file(folder, "a", *frames(tiny_ai4mars, 1)[0])
    assert run(edge_student[1], folder, tmp_path / "out", "--topic", TOPIC) == 2
    assert f"INPUT {folder}: --topic reads a bag" in capsys.readouterr().err
