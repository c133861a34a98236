"""OpenVINO's CPU plugin: .onnx files (FP32, and QDQ INT8 natively) and IR .xml files saved from them;
the runtime Intel and ARM CPU users pick. `quantize --target cpu` makes its QDQ layouts candidates too,
gated and timed on it, where it is installed (`pip install .[openvino]`). Two streams on 2 cores (the
CPU runtimes' default): 56.1 -> 63.3 FPS end to end for the INT8 student at 512 px, default outputs
(benchmarks/results/edge_writer_study.md)."""

from __future__ import annotations

from pathlib import Path

from marsedge.runtimes.registry import OpenOptions, Runtime, register_runtime

# `--recipe auto` candidates on OpenVINO: QDQ, the layout it loads (benchmarks/cpu_runtimes.py times them)
AUTO_RECIPES = ("qdq-u8s8-all", "qdq-u8s8", "qdq-s8s8-sym")


def _open(path: Path, options: OpenOptions):
    from marsedge.runtimes.openvino.runner import OpenVinoBackend

    return OpenVinoBackend(path, threads=options.threads, streams=options.streams)


register_runtime(Runtime(
    "openvino", "OpenVINO", "openvino", _open, install="pip install .[openvino]", suffixes=(".xml",),
    opens_onnx=True, cpu_streams=True,
    # QDQ only: OpenVINO cannot load ONNX Runtime's QOperator files (QLinearConv & co.)
    int8_formats=("QDQ",), auto_recipes=AUTO_RECIPES))
