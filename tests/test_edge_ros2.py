"""The ROS 2 node for real: `marsedge ros2` in its own process on a real exported student, real rclpy
and DDS on localhost (a domain id of this test run's own, so that parallel runs never hear each
other), 20 sensor_msgs/Image frames of four encodings in, masks compared with edge-run's for the
same frames as files; headers copied; malformed messages logged and survived; SIGINT ends it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_support import fields, frames, write_file

from marsedge.edge.run import main as edge_run

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install 'marsedge[ros2]')")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N = 20


@pytest.fixture()
def ros_domain(monkeypatch) -> int:
    domain = random.Random(os.getpid() * 1000 + time.time_ns()).randint(1, 100)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain


class Peer:
    """A test-side rclpy node: one publisher to image_in, subscribers that keep what arrives."""

    def __init__(self, domain: int, topics: dict[str, type]) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("marsedge_tester", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.got: dict[str, list] = {topic: [] for topic in topics}
        for topic, kind in topics.items():
            self.node.create_subscription(kind, topic, self.got[topic].append,
                                          latched if topic == "class_table" else reliable)
        self.images = self.node.create_publisher(Image, "image_in", reliable)

    def spin_until(self, done, seconds: float, what: str, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            if proc.poll() is not None:
                pytest.fail(f"the node ended while waiting for {what}: rc {proc.returncode}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {seconds} s")
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def image(kind: str, samples: np.ndarray, sec: int, frame_id: str, pad: int = 0, **override) -> Image:
    """A sensor_msgs/Image of `kind` with header (sec, frame_id); `override` breaks a field on purpose."""
    msg = Image(**{**fields(kind, samples, pad=pad, bigendian=sec % 3 == 0), **override})
    msg.header.stamp.sec, msg.header.frame_id = sec, frame_id
    return msg


def start_node(model: Path, log: Path, *params: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "marsedge", "ros2", "--model", str(model), "--ros-args",
            "-p", "threads:=1", "-p", "qos:=reliable", "-p", "queue_depth:=50", *params]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})


def test_node_masks_equal_edge_runs_headers_copied_malformed_survived(edge_student, tiny_ai4mars, tmp_path,
                                                                      ros_domain):
    log = tmp_path / "node.log"
    proc = start_node(edge_student[1], log, "-p", "confidence_encoding:=32FC1")
    peer = Peer(ros_domain, {"class_mask": Image, "overlay": Image, "confidence": Image,
                                 "hazards": String, "class_table": String})
    try:
        # edge-run on the same frames as files, while the node starts
        sent = frames(tiny_ai4mars, N)
        for i, (encoding, samples) in enumerate(sent):
            write_file(tmp_path / "png", f"{i:02d}", encoding, samples)
        assert edge_run([str(tmp_path / "png"), str(tmp_path / "out"), "--model", str(edge_student[1]),
                         "--threads", "1", "--visualize", "mask", "--backend-probe", "0"]) == 0
        expected = {int(r["name"][:2]): cv2.imread(str(tmp_path / "out" / r["mask"]), cv2.IMREAD_UNCHANGED)
                    for r in map(json.loads, (tmp_path / "out/frames.jsonl").read_text().splitlines())}

        peer.spin_until(lambda: peer.got["class_table"], 60, "latched class table", proc)
        table = json.loads(peer.got["class_table"][0].data)
        assert [c["name"] for c in table["classes"]][:4] == ["soil", "bedrock", "sand", "big rock"]
        peer.spin_until(lambda: peer.images.get_subscription_count() > 0, 30, "subscription", proc)

        for i, (encoding, samples) in enumerate(sent):
            peer.images.publish(image(encoding, samples, 100 + i, f"navcam_{i}", pad=2 * (i % 3)))
        grey = sent[0][1]
        h, w = grey.shape
        peer.images.publish(image("mono8", grey, 200, "wrong_step", step=w - 1))
        peer.images.publish(image("mono8", grey, 201, "short", data=grey.tobytes()[:-w]))
        peer.images.publish(image("mono8", grey, 202, "yuv", encoding="yuv422"))
        peer.images.publish(image("mono8", grey, 203, "after"))  # the node still works
        peer.spin_until(lambda: len(peer.got["class_mask"]) == len(peer.got["hazards"]) == N + 1, 60,
                          f"{N + 1} masks", proc)

        for msg in peer.got["class_mask"]:
            i = msg.header.stamp.sec - 100
            assert msg.encoding == "mono8" and msg.step == msg.width
            mask = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)
            if msg.header.frame_id == "after":
                assert i == 103 and mask.shape == grey.shape
                continue
            assert msg.header.frame_id == f"navcam_{i}"
            assert np.array_equal(mask, expected[i]), f"frame {i} ({sent[i][0]})"
        for msg in peer.got["overlay"] + peer.got["confidence"]:
            assert msg.header.frame_id in {f"navcam_{msg.header.stamp.sec - 100}", "after"}
        overlay, confidence = peer.got["overlay"][0], peer.got["confidence"][0]
        assert overlay.encoding == "rgb8" and overlay.step == 3 * overlay.width
        assert confidence.encoding == "32FC1"
        values = np.frombuffer(bytes(confidence.data), "<f4")
        assert values.size == confidence.width * confidence.height and 0 < values.min() <= values.max() <= 1
        summary = json.loads(peer.got["hazards"][0].data)
        assert {"classes", "hazards", "mean_confidence", "stamp", "frame_id"} <= set(summary)
    finally:
        peer.close()
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the node did not end within 20 s of SIGINT")
    err = log.read_text()
    assert rc == 0, err[-2000:]
    assert "wrong step" in err and "size mismatch" in err, err[-2000:]
    assert err.count("unsupported image encoding 'yuv422'") == 1
    stopped = next(line for line in err.splitlines() if "stopped:" in line)
    counts = json.loads(stopped.split("published ", 1)[1])
    assert f"{N + 1} frames ok, 3 failed" in stopped
    assert counts["color_mask"] == 0 and counts["overlay"] == N + 1  # only what someone listens to


def nan_on_black_model(student: Path, out: Path) -> Path:
    """The student with `+ 0 * log(max(input))` on its logits: unchanged for a real frame, NaN
    everywhere for a black one (0 * -inf), so the node meets real non-finite logits."""
    import onnx
    from onnx import helper

    model = onnx.load(str(student))
    graph = model.graph
    x, y = graph.input[0].name, graph.output[0].name
    graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    for node in graph.node:  # the logits now go through the new nodes
        node.output[:] = [f"{y}_raw" if o == y else o for o in node.output]
    graph.node.extend([helper.make_node("ReduceMax", [x], ["peak"], keepdims=1),
                       helper.make_node("Log", ["peak"], ["log_peak"]),
                       helper.make_node("Mul", ["log_peak", "zero"], ["nan_if_black"]),
                       helper.make_node("Add", [f"{y}_raw", "nan_if_black"], [y])])
    onnx.save(model, str(out))
    return out


def test_non_finite_logits_are_a_dropped_frame(edge_student, tiny_ai4mars, tmp_path, ros_domain):
    model = nan_on_black_model(edge_student[1], tmp_path / "nan_on_black.onnx")
    log = tmp_path / "node.log"
    proc = start_node(model, log)
    peer = Peer(ros_domain, {"class_mask": Image, "class_table": String})
    try:
        peer.spin_until(lambda: peer.got["class_table"], 60, "latched class table", proc)
        peer.spin_until(lambda: peer.images.get_subscription_count() > 0, 30, "subscription", proc)
        grey = frames(tiny_ai4mars, 1)[0][1]
        peer.images.publish(image("mono8", np.zeros_like(grey), 1, "black"))
        peer.images.publish(image("mono8", grey, 2, "navcam"))
        peer.spin_until(lambda: peer.got["class_mask"], 30, "the mask of the real frame", proc)
        assert [m.header.frame_id for m in peer.got["class_mask"]] == ["navcam"]
    finally:
        peer.close()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=20)
    err = log.read_text()
    assert rc == 0 and "frame 1.000000000 dropped: the model's logits are not finite" in err, err[-2000:]
    assert "1 frames ok, 1 failed" in err


@pytest.mark.parametrize("args, line", [
    ([], "model: no model file"),
    (["--model", "MODEL", "--ros-args", "-p", "min_confidence:=2"], "min_confidence: 2.0 is outside"),
    (["--model", "MODEL", "--ros-args", "-p", "streams:=two"], "streams: 'two' is not an integer"),
])
def test_a_bad_parameter_is_one_line_and_exit_2(edge_student, ros_domain, args, line):
    args = [str(edge_student[1]) if a == "MODEL" else a for a in args]
    done = subprocess.run([sys.executable, "-m", "marsedge", "ros2", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    lines = [text for text in done.stderr.splitlines() if text.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"marsedge ros2: error: parameter {line}"), lines
