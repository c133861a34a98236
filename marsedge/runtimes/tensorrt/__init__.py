"""TensorRT: serialized engines (.engine), one frame at a time on the GPU. Loaders apart from the
runner, as Polygraphy does: `build` makes an engine and its sidecar from an ONNX (`marsedge build`,
`cli`), `plan` decides what a build does without TensorRT, `sidecar` records what an engine was built
for, `runner` runs one only where its sidecar says it belongs. The workstation's `quantize` (the
`--target tensorrt` QDQ model, through `modelopt_ptq`) is imported by `marsedge.deploy` only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from marsedge.runtimes.registry import OpenOptions, Runtime, register_runtime


def _open(path: Path, options: OpenOptions):
    from marsedge.runtimes.base import one_stream
    from marsedge.runtimes.tensorrt.runner import TensorRTBackend

    one_stream("tensorrt", path, options.streams)  # one execution context, one CUDA stream
    return TensorRTBackend(path, rebuild_stale=options.rebuild_stale)


def _describe(path: Path) -> str:
    """The engine's sidecar, as written (`marsedge inspect`)."""
    from marsedge.runtimes.tensorrt.sidecar import sidecar_path

    return sidecar_path(path).read_text()


def _version() -> str | None:
    """`tensorrt.__version__` where the bindings import: pip installs them as `tensorrt_cu12` /
    `tensorrt_cu13` (the `tensorrt` name is only a meta package), and JetPack's apt package has no
    pip metadata at all."""
    if "tensorrt" not in sys.modules and importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt
    except Exception:  # present but broken (no libnvinfer): no version to report
        return None
    version = getattr(tensorrt, "__version__", None)
    return str(version) if version else None


register_runtime(Runtime(
    "tensorrt", "TensorRT", "tensorrt", _open, install="JetPack ships it; on a workstation "
    "`pip install tensorrt`", suffixes=(".engine",), quantizer="marsedge.runtimes.tensorrt.quantize",
    commands="marsedge.runtimes.tensorrt.cli", describe=_describe, version=_version))
