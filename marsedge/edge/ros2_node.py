"""`marsedge ros2` (also `edge-ros`): the terrain segmentation node on the rover's ROS 2 bus.

    marsedge ros2 --ros-args -p model:=student.int8.onnx -r image_in:=/navcam/left/image_raw

The same runtimes (`marsedge.runtimes.choice.open_backend`), THE preprocessing, the same checks,
argmax, confidence and hazard rules as edge-run (`pipeline.check_frame`, `predict.logits_to_mask`,
`confidence`, `hazards`): a frame gives the same mask on the bus as in edge-run's masks/ folder.

    subscribes  image_in      sensor_msgs/Image  mono8, mono16, rgb8, bgr8 (any other: one log line
                                                 naming the encoding, once per encoding)
    publishes   class_mask    sensor_msgs/Image  mono8 class ids at the input's size (255: unknown)
                color_mask    sensor_msgs/Image  rgb8 class colours         } only while someone
                overlay       sensor_msgs/Image  rgb8 colours over the frame } subscribes (the work
                confidence    sensor_msgs/Image  mono8 0-255 or 32FC1       } is skipped otherwise)
                hazards       std_msgs/String    JSON: class fractions, corridor hazards (+ confidence)
                class_table   std_msgs/String    JSON, latched (transient local): ids, names, colours

Every output copies the input's header (stamp and frame_id). A frame that fails (malformed
message: wrong step, data of the wrong size; a wrong-sized frame; non-finite logits; a runtime
error) is logged in one line and dropped: the node goes on. SIGINT/SIGTERM end it cleanly (rclpy's
signal handlers stop the executor; the model is closed).
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from marsedge.data.preprocess import preprocess
from marsedge.edge.confidence import Confidence, check_finite, confidence_bytes
from marsedge.edge.hazards import HazardRules, class_fractions, load_hazard_config
from marsedge.edge.pipeline import check_frame, describe
from marsedge.edge.predict import is_classifier, logits_to_mask
from marsedge.edge.ros_image import ENCODINGS, EncodingError, image_fields, image_from_msg
from marsedge.edge.sinks import Writer
from marsedge.errors import ConfigError, MarsedgeError
from marsedge.runtimes import backend_names, known_suffixes
from marsedge.runtimes.choice import open_backend
from marsedge.terrain import colorize, palette

QOS_CHOICES = ("sensor_data", "reliable")
CONFIDENCE_ENCODINGS = ("mono8", "32FC1")
# name -> (default, description): the node's ROS parameters
PARAMETERS = {
    "model": ("", f"model file ({', '.join(known_suffixes())})"),
    "backend": ("", f"{', '.join(backend_names())}; '' = what the model file names"),
    "threads": (0, "CPU threads of the runtime; 0 = its default"),
    "streams": (1, "frames inferred at once (executor threads and backend streams)"),
    "queue_depth": (2, "QoS history depth of image_in and of the outputs"),
    "qos": ("sensor_data", "sensor_data (best effort, volatile) or reliable"),
    "confidence_encoding": ("mono8", "confidence topic: mono8 (probability x 255) or 32FC1 (0..1)"),
    "min_confidence": (0.0, "pixels below this max softmax probability become 255 (unknown)"),
    "hazards": ("", "hazard YAML (HazardConfig); '' = the defaults"),
    "alpha": (0.5, "overlay opacity 0..1"),
}


def image_msg(header, array: np.ndarray, encoding: str) -> Image:
    """An output image carrying the input's header."""
    return Image(header=header, **image_fields(array, encoding))


class SegmentationNode(Node):
    """image_in -> class_mask, color_mask, overlay, confidence, hazards (see the module doc)."""

    def __init__(self, node_name: str = "marsedge_segmentation") -> None:
        super().__init__(node_name)
        p = {name: self._parameter(name, default, description)
             for name, (default, description) in PARAMETERS.items()}
        self.settings = p
        self._check(p)
        self.backend = open_backend(p["model"], p["backend"] or None, threads=p["threads"] or None,
                                    streams=p["streams"])
        if is_classifier(self.backend):
            self.backend.close()
            raise ConfigError(f"model {p['model']} is an image classifier: the node segments")
        self.table = self.backend.metadata["class_table"]
        self.hazards = HazardRules.for_model(load_hazard_config(p["hazards"] or None), self.table)
        self.confidence = Confidence(self.table, p["min_confidence"] or None)
        self.painter = Writer(Path("."), set(), p["alpha"], self.table)  # its overlay; it writes no file
        self.counts = {"ok": 0, "failed": 0, **{t: 0 for t in ("class_mask", "color_mask", "overlay",
                                                                "confidence", "hazards")}}
        self.lock = threading.Lock()
        self.refused: set[str] = set()
        qos = _qos(p["qos"], p["queue_depth"])
        self.pubs = {name: self.create_publisher(Image, name, qos)
                     for name in ("class_mask", "color_mask", "overlay", "confidence")}
        self.pubs["hazards"] = self.create_publisher(String, "hazards", qos)
        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.table_pub = self.create_publisher(String, "class_table", latched)
        self.table_pub.publish(String(data=json.dumps(self.class_table_json())))
        for note in self.hazards.notes():
            self.get_logger().warning(note)
        self.create_subscription(Image, "image_in", self.on_image, qos,
                                 callback_group=ReentrantCallbackGroup())  # `streams` frames at once
        self.get_logger().info(f"{p['model']} on {self.backend.name} {self.backend.precision}, "
                               f"{p['streams']} stream(s), QoS {p['qos']} depth {p['queue_depth']}: "
                               f"image_in ({', '.join(ENCODINGS)}) -> class_mask, color_mask, overlay, "
                               "confidence, hazards, class_table")

    def _parameter(self, name: str, default, description: str):
        """Declared with dynamic typing (`-p min_confidence:=1` is an int to ROS), then taken as
        the default's type; a value that is not one is a ConfigError naming the parameter."""
        descriptor = ParameterDescriptor(description=description, dynamic_typing=True)
        value = self.declare_parameter(name, default, descriptor=descriptor).value
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            kind = "an integer" if isinstance(default, int) else "a number"
            raise ConfigError(f"parameter {name}: {value!r} is not {kind}") from None

    @staticmethod
    def _check(p: dict) -> None:
        if not p["model"]:
            raise ConfigError("parameter model: no model file (--ros-args -p model:=student.onnx)")
        if p["qos"] not in QOS_CHOICES:
            raise ConfigError(f"parameter qos: {p['qos']!r} is not one of {', '.join(QOS_CHOICES)}")
        if p["confidence_encoding"] not in CONFIDENCE_ENCODINGS:
            raise ConfigError(f"parameter confidence_encoding: {p['confidence_encoding']!r} is not one of "
                              f"{', '.join(CONFIDENCE_ENCODINGS)}")
        if not 0.0 <= float(p["min_confidence"]) <= 1.0:
            raise ConfigError(f"parameter min_confidence: {p['min_confidence']} is outside 0..1")
        if not 0.0 <= float(p["alpha"]) <= 1.0:
            raise ConfigError(f"parameter alpha: {p['alpha']} is outside 0..1")
        for name in ("streams", "queue_depth"):
            if int(p[name]) < 1:
                raise ConfigError(f"parameter {name}: {p[name]} must be at least 1")

    def class_table_json(self) -> dict:
        colours = palette(self.table)
        return {"classes": [{"id": int(c["id"]), "name": str(c["name"]),
                             "color": [int(v) for v in colours[int(c["id"])]]} for c in self.table],
                "unknown": 255, "model": str(self.settings["model"])}

    def wanted(self, topic: str) -> bool:
        return self.pubs[topic].get_subscription_count() > 0

    def on_image(self, msg: Image) -> None:
        """One frame; whatever goes wrong is logged and the frame dropped."""
        try:
            self.segment(msg)
        except EncodingError as exc:
            if msg.encoding not in self.refused:  # one line per encoding, not one per frame
                self.refused.add(msg.encoding)
                self.get_logger().error(f"image_in: {exc}: frames of this encoding are dropped")
            self._count("failed")
        except Exception as exc:  # a frame's failure is never the node's
            stamp = msg.header.stamp
            self.get_logger().error(f"frame {stamp.sec}.{stamp.nanosec:09d} dropped: {describe(exc)}")
            self._count("failed")

    def segment(self, msg: Image) -> None:
        image = image_from_msg(msg)
        check_frame(image, self.backend.spec)
        logits = np.asarray(self.backend.infer(preprocess(image, self.backend.spec)[None]))
        check_finite(logits)
        record: dict = {}
        confidence = None
        if self.wanted("confidence") or self.confidence.min_confidence:
            mask, confidence, record["mean_confidence"] = self.confidence.apply(logits, image.shape[:2])
        else:
            mask = logits_to_mask(logits, image.shape[:2])[0]
        header = msg.header
        built = [("class_mask", image_msg(header, mask, "mono8"))]  # every output built before any is sent
        if self.wanted("color_mask"):
            built.append(("color_mask", image_msg(header, colorize(mask, self.table), "rgb8")))
        if self.wanted("overlay"):  # the painter's blend is BGR, as edge-run's JPEG encoder wants it
            rgb = self.painter.overlay(image, mask)[:, :, ::-1]
            built.append(("overlay", image_msg(header, rgb, "rgb8")))
        if confidence is not None and self.wanted("confidence"):
            encoding = self.settings["confidence_encoding"]
            values = confidence_bytes(confidence) if encoding == "mono8" else confidence
            built.append(("confidence", image_msg(header, values, encoding)))
        summary = {"stamp": {"sec": header.stamp.sec, "nanosec": header.stamp.nanosec},
                   "frame_id": header.frame_id, "classes": class_fractions(mask, self.table),
                   "hazards": self.hazards.assess(mask), **record}
        built.append(("hazards", String(data=json.dumps(summary))))
        for topic, out in built:
            self.pubs[topic].publish(out)
            self._count(topic)
        self._count("ok")

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def destroy_node(self) -> None:
        self.backend.close()
        super().destroy_node()


def _qos(name: str, depth: int) -> QoSProfile:
    reliability = ReliabilityPolicy.BEST_EFFORT if name == "sensor_data" else ReliabilityPolicy.RELIABLE
    return QoSProfile(depth=int(depth), history=HistoryPolicy.KEEP_LAST, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM. Setup errors (a missing model, a bad parameter) are one
    line and exit 2 (usage) or 1 (model, data)."""
    rclpy.init(args=sys.argv if argv is None else ["marsedge-ros2", *argv])
    node = None
    try:
        node = SegmentationNode()
        streams = int(node.settings["streams"])
        executor = MultiThreadedExecutor(num_threads=streams) if streams > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except MarsedgeError as exc:
        print(f"marsedge ros2: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a model that cannot open, a foreign runtime error: one line
        print(f"marsedge ros2: error: {describe(exc)}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            counts = dict(node.counts)
            node.destroy_node()
            print(f"marsedge ros2: stopped: {counts['ok']} frames ok, {counts['failed']} failed, "
                  f"published {json.dumps({k: v for k, v in counts.items() if k not in ('ok', 'failed')})}",
                  file=sys.stderr)
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
