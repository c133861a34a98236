"""marsedge: Mars rover terrain segmentation from the workstation to the rover.

Extras are split by where the code runs:
  edge    the rover computer: numpy, OpenCV, ONNX Runtime, pdr and nothing more (no torch)
  deploy  workstation export/quantize: onnx, onnxscript, nvidia-modelopt (its ONNX needs named
          one by one, because `nvidia-modelopt[onnx]` pulls onnxruntime-gpu next to onnxruntime)
  train   torch and what training needs; on the project's CPU machines torch is 2.13.0 (Makefile)
  openvino  the OpenVINO backend (`--backend openvino`), beside ONNX Runtime
  bags    recorded bags (rosbag2 sqlite3/MCAP, ROS 1) as edge-run input
  ros2    the ROS 2 node (`marsedge ros2`, `edge-ros`): ROS 2 Jazzy's rclpy and messages as wheels
  bench   plots for reports
  tensorboard  TensorBoard event files of training runs (`run.tensorboard: true`)
  dev     tests, lint and the documentation site (mkdocs)
"""

from setuptools import find_packages, setup

EDGE = ["numpy>=1.24", "opencv-python-headless>=4.8", "onnxruntime>=1.18", "pdr>=1.1"]
BAGS = ["rosbags>=0.10"]  # recorded bags as edge-run input (pure Python: no ROS installation)
# Jazzy's rclpy as wheels; without its fastrtps extra the import fails on librmw_fastrtps_cpp.so
ROS2 = ["ros-jazzy-rclpy[fastrtps]", "ros-sensor-msgs", "ros-std-msgs"]
DEPLOY = [
    "onnx~=1.21.0",  # the version nvidia-modelopt 0.47 is tested with
    "onnxscript",
    "nvidia-modelopt==0.47.0",
    "onnx-graphsurgeon>=0.6.1",
    "onnxslim>=0.1.76",
    "onnxconverter-common~=1.16.0",
    "polygraphy>=0.53.4",
    "ml_dtypes",
    "lief",  # modelopt.onnx imports it (trt_utils) but does not declare it outside its [onnx] extra
    "cppimport",  # likewise (modelopt.onnx.quantization.extensions)
]
TRAIN = ["torch>=2.4", "matplotlib>=3.7", "scikit-learn>=1.3", "safetensors>=0.4"]
OPENVINO = ["openvino>=2024.0"]  # 2026.4.1 measured; pip check clean next to [deploy] and [train]
BENCH = ["matplotlib>=3.7"]
TENSORBOARD = ["tensorboard>=2.14"]  # 2.21.0 measured beside torch 2.13.0
DEV = ["pytest>=8", "pytest-timeout", "ruff>=0.6", "hypothesis>=6.100",
       "mkdocs>=1.6", "mkdocs-material>=9.5"]  # the documentation site (mkdocs.yml)

setup(
    name="marsedge",
    version="0.1.0",
    description="Mars rover terrain segmentation: train, distill, quantize, deploy, benchmark",
    python_requires=">=3.10",
    packages=find_packages(include=["marsedge", "marsedge.*"]),
    py_modules=["train", "distill"],
    include_package_data=True,
    install_requires=["numpy>=1.24", "pyyaml>=6", "tqdm>=4.60"],
    extras_require={
        "edge": EDGE,
        "deploy": EDGE + DEPLOY,
        "train": EDGE + TRAIN,
        "openvino": EDGE + OPENVINO,
        "bench": EDGE + BENCH,
        "bags": EDGE + BAGS,
        "ros2": EDGE + BAGS + ROS2,
        "tensorboard": TENSORBOARD,
        "dev": DEV,
        "all": EDGE + DEPLOY + TRAIN + OPENVINO + BENCH + BAGS + ROS2 + TENSORBOARD + DEV,
    },
    entry_points={
        "console_scripts": [
            "marsedge=marsedge.cli:main",
            "edge-run=marsedge.edge.run:main",
            "edge-ros=marsedge.edge.ros2_cli:main",
        ]
    },
)
