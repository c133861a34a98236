"""ONNX Runtime: the default runtime of an .onnx file, on the CPU (2 streams on 2+ cores) or on a GPU
provider where the build has one; its INT8 layouts (`recipes`) are ONNX Runtime's static quantization,
made by `quantize` (the workstation's `quantize` module of this package)."""

from __future__ import annotations

from pathlib import Path

from marsedge.runtimes.onnxruntime.recipes import AUTO_CPU_RECIPES
from marsedge.runtimes.registry import OpenOptions, Runtime, register_runtime


def _open(path: Path, options: OpenOptions):
    from marsedge.runtimes.onnxruntime.runner import OnnxBackend

    return OnnxBackend(path, threads=options.threads, streams=options.streams,
                       providers=["CPUExecutionProvider"] if options.cpu_only else None)


def _uses_gpu() -> bool:
    from marsedge.runtimes.onnxruntime.runner import has_gpu_provider

    return has_gpu_provider()


register_runtime(Runtime(
    "onnxruntime", "ONNX Runtime", "onnxruntime", _open, install="pip install onnxruntime",
    suffixes=(".onnx",), opens_onnx=True, cpu_streams=True, uses_gpu=_uses_gpu,
    int8_formats=("QOperator", "QDQ"), auto_recipes=AUTO_CPU_RECIPES,
    quantizer="marsedge.runtimes.onnxruntime.quantize"))
