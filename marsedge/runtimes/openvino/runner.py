"""OpenVINO's runner: the runtime Intel and ARM CPU users pick, behind the one Backend contract.

    backend = OpenVinoBackend("student.int8.onnx", threads=2)      # or: edge-run ... --backend openvino
    logits = backend.infer(batch)

Why it is here (measured on a 2-core AMD EPYC Zen 5 with AVX-512 VNNI at 512 px,
`benchmarks/results/cpu_runtimes_amd-epyc-zen5.md`): OpenVINO runs QDQ files natively as INT8 (marsedge's
`qdq-*` recipes, and the QDQ file quantized for the GPU), with a faster depthwise int8 kernel than
ONNX Runtime's, so one QDQ file can serve the GPU and the CPU. It cannot load ONNX Runtime's
QOperator files (QLinearConv, QLinearAdd, ...): such a file is refused with the reason. A file runs
here without `--backend` when its metadata names OpenVINO (`marsedge quantize --target cpu` chose it,
measured: marsedge.deploy.runtime_choice); an FP32 export with `--backend auto` where it measures faster.

The model's description comes from the file itself: OpenVINO's ONNX frontend keeps the ONNX
metadata_props in the model's rt_info (`framework` section), so neither `onnx` nor ONNX Runtime is
needed on a rover that runs OpenVINO only. Precision: FP32 files run in FP32 (`inference_precision
="f32"`, OpenVINO's CPU plugin would otherwise pick BF16 on CPUs with AMX); `"bf16"` is the opt-in.
"""

from __future__ import annotations

import ctypes
import queue
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from marsedge.edge.onnx_meta import parse_props
from marsedge.errors import ModelError
from marsedge.runtimes.base import BaseBackend, check_streams

PRECISIONS = ("f32", "bf16")  # OpenVINO's INFERENCE_PRECISION_HINT values offered here


class _SignalStack(ctypes.Structure):  # struct stack_t (Linux, <signal.h>)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextmanager
def _signal_stack_kept() -> Iterator[None]:
    """Put the calling thread's alternate signal stack back as it was after the block.

    Why: OpenVINO 2026.4's CPU plugin, when it is created (the first compile_model of an ov.Core),
    gives the calling thread an alternate signal stack of its own (sigaltstack, 11.5 KB) and, when
    it is destroyed, frees it and restores the stack it found. Two Cores freed in the order they
    were made (two backends; `quantize --runtime openvino` opens several) leave the thread on the
    first plugin's freed stack. Python runs its signal handlers on the alternate stack (SA_ONSTACK),
    so the next SIGINT or SIGTERM could not be delivered and the process died of SIGSEGV instead of
    stopping (found in the test suite; gdb: the kernel could not write the signal frame). With the
    thread's own stack put back at once, no plugin's stack is ever in use. Linux only; elsewhere a
    no-op."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = _SignalStack()
    if libc.sigaltstack(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        now = _SignalStack()
        libc.sigaltstack(None, ctypes.byref(now))
        if (now.ss_sp, now.ss_size, now.ss_flags) != (before.ss_sp, before.ss_size, before.ss_flags):
            libc.sigaltstack(ctypes.byref(before), None)


def _props(model) -> dict[str, str]:
    """The ONNX metadata_props OpenVINO kept (rt_info['framework'][key]), as strings."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    section = info["framework"]  # an OVAny or, in some bindings, already a dict
    keys = section.astype(dict) if hasattr(section, "astype") else section
    return {key: model.get_rt_info(["framework", key]).astype(str) for key in keys}


def _dims(shape) -> list[int | None]:
    """An OpenVINO PartialShape as a list, None for a dynamic dimension."""
    return [d.get_length() if d.is_static else None for d in shape]


class OpenVinoBackend(BaseBackend):
    """OpenVINO CPU plugin over a marsedge ONNX model (FP32 or QDQ INT8), or an IR (.xml) saved
    from one (ov.save_model keeps rt_info)."""

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, inference_precision: str = "f32",
                 device: str = "CPU", streams: int = 1) -> None:
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
        check_streams(streams, self.path)
        # OpenVINO's own streams: the plugin splits INFERENCE_NUM_THREADS between them
        config = {"INFERENCE_PRECISION_HINT": inference_precision,
                  "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
                  "NUM_STREAMS": str(streams)}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(max(int(threads), streams))
        try:
            with _signal_stack_kept():
                self.compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise ModelError(f"{self.path}: OpenVINO cannot compile it for {device}: "
                             f"{str(exc).splitlines()[0]}") from None
        self.streams = streams
        self.requests: queue.Queue = queue.Queue()  # one infer request per stream, lent per call
        for _ in range(streams):
            self.requests.put(self.compiled.create_infer_request())
        self._shapes = [_dims(model.inputs[0].get_partial_shape()),
                        _dims(model.outputs[0].get_partial_shape())]
        self.engine_batch = self._shapes[0][0] if self._shapes[0] else None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        request = self.requests.get()  # never waits longer than a sibling call's inference
        try:
            request.infer({0: batch})
            # a copy: OpenVINO reuses the output buffer on the next call
            return np.array(request.get_output_tensor(0).data, dtype=np.float32)
        finally:
            self.requests.put(request)

    def input_shape(self) -> list[int | None]:
        return self._shapes[0]

    def output_shape(self) -> list[int | None]:
        return self._shapes[1]

    def close(self) -> None:
        self.requests = self.compiled = None
