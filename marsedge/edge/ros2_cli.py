"""`marsedge ros2` and `edge-ros`: start the segmentation node (`marsedge.edge.ros2_node`).

    marsedge ros2 --model student.int8.onnx --ros-args -r image_in:=/navcam/left/image_raw
    edge-ros --ros-args -p model:=student.int8.onnx -p qos:=reliable

`--model M` is `-p model:=M`; everything after `--ros-args` goes to ROS 2 as written (parameters,
remappings, `--params-file`, `__ns:=`). rclpy is imported only when the node starts: the other
commands run without it (it comes with the `ros2` extra).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model file (.onnx, .engine, .pt): the model parameter")
    parser.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                        help="ROS 2 arguments: -p NAME:=VALUE, -r image_in:=/topic, --params-file F, ...")


def register(subparsers) -> None:
    ros = subparsers.add_parser("ros2", help="the segmentation node on a ROS 2 bus (needs the ros2 extra)",
                                description=__doc__.splitlines()[0])
    add_arguments(ros)
    ros.set_defaults(func=run_ros2)


def ros_argv(args: argparse.Namespace) -> list[str]:
    """The argv rclpy parses: --model as a parameter, then the --ros-args block as written."""
    argv = ["--ros-args", "-p", f"model:={args.model}"] if args.model else []
    return argv + (["--ros-args", *args.ros_args] if args.ros_args else [])


def run_ros2(args: argparse.Namespace) -> int:
    try:
        from marsedge.edge import ros2_node
    except ImportError as exc:
        print(f"marsedge ros2: error: rclpy is not installed ({exc.name or exc}): "
              "pip install 'marsedge[ros2]'", file=sys.stderr)
        return 2
    return ros2_node.main(ros_argv(args))


def main(argv: list[str] | None = None) -> int:
    """`edge-ros`."""
    parser = argparse.ArgumentParser(prog="edge-ros", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_ros2(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
