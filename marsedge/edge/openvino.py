"""OpenVINO backend: the runtime Intel and ARM CPU users pick, behind the one Backend contract.

    backend = OpenVinoBackend("student.int8.onnx", threads=2)      # or: edge-run ... --backend openvino
    logits = backend.infer(batch)

Why it is here (issue 19, measured on a 2-core AMD EPYC Zen 5 with AVX-512 VNNI at 512 px,
`benchmarks/results/cpu_runtimes.md`): OpenVINO runs QDQ files natively as INT8 (marsedge's
`qdq-*` recipes, and the QDQ file made for TensorRT), with a faster depthwise int8 kernel than
ONNX Runtime's, so one QDQ file can serve TensorRT and the CPU. It cannot load ONNX Runtime's
QOperator files (QLinearConv, QLinearAdd, ...): such a file is refused with the reason. ONNX
Runtime stays the default backend; `--backend auto` picks OpenVINO only where it measures faster.

The model's description comes from the file itself: OpenVINO's ONNX frontend keeps the ONNX
metadata_props in the model's rt_info (`framework` section), so neither `onnx` nor ONNX Runtime is
needed on a rover that runs OpenVINO only. Precision: FP32 files run in FP32 (`inference_precision
="f32"`, OpenVINO's CPU plugin would otherwise pick BF16 on CPUs with AMX); `"bf16"` is the opt-in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marsedge.edge.backends import BaseBackend
from marsedge.edge.onnx_meta import parse_props
from marsedge.errors import ModelError

PRECISIONS = ("f32", "bf16")  # OpenVINO's INFERENCE_PRECISION_HINT values offered here


def _props(model) -> dict[str, str]:
    """The ONNX metadata_props OpenVINO kept (rt_info['framework'][key]), as strings."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    section = info["framework"]  # an OVAny or, in some bindings, already a dict
    keys = section.astype(dict) if hasattr(section, "astype") else section
    return {key: model.get_rt_info(["framework", key]).astype(str) for key in keys}


class OpenVinoBackend(BaseBackend):
    """OpenVINO CPU plugin over a marsedge ONNX model (FP32 or QDQ INT8), or an IR (.xml) saved
    from one (ov.save_model keeps rt_info)."""

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, inference_precision: str = "f32",
                 device: str = "CPU") -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ModelError(f"{path}: the openvino backend needs `pip install .[openvino]`") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        if inference_precision not in PRECISIONS:
            raise ModelError(f"{self.path}: inference precision must be one of {PRECISIONS}, "
                             f"got {inference_precision!r}")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError with a many-line conversion report
            report = str(exc)
            if "QLinear" in report:
                raise ModelError(f"{self.path}: OpenVINO cannot run ONNX Runtime's QOperator INT8 layout "
                                 "(QLinearConv & co.); quantize with a qdq-* recipe for OpenVINO") from None
            failed = [line for line in report.splitlines() if line.startswith("-- ")]
            reason = failed[0][3:] if failed else report.splitlines()[-1]
            raise ModelError(f"{self.path}: OpenVINO cannot read it: {reason}") from None
        self.model_metadata = parse_props(_props(model), self.path)
        quant = self.model_metadata.quantization or {}
        if quant:
            self.precision = str(quant.get("precision", "int8"))
        elif inference_precision == "bf16":
            self.precision = "bf16"
        config = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(int(threads))
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise ModelError(f"{self.path}: OpenVINO cannot compile it for {device}: "
                             f"{str(exc).splitlines()[0]}") from None
        self.request = self.compiled.create_infer_request()
        first = model.inputs[0].get_partial_shape()[0]
        self.engine_batch = first.get_length() if first.is_static else None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch})
        # a copy: OpenVINO reuses the output buffer on the next call
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)

    def close(self) -> None:
        self.request = self.compiled = None
