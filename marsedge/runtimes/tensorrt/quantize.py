"""`quantize --target tensorrt` (output MODEL.qdq.onnx): a QDQ model for TensorRT's explicit
quantization (the only INT8 path left in TensorRT 11). Workstation only: imported by
`marsedge.deploy` through the registry, never by the rover.

nvidia-modelopt's ONNX PTQ writes it; non-quantized layers stay FP32 so the gate can evaluate it on
ONNX Runtime CPU. modelopt runs in a child process (`modelopt_ptq`: it patches ONNX Runtime for the
whole process); its per-node calibration (`calibrate_per_node`, bounded memory, about a minute per
frame at 512 px on 2 cores) runs only with `--per-node`. `--recipe qdq-s8s8-sym` writes ONNX
Runtime's symmetric QDQ file instead, in seconds and without modelopt (the one file meant for both
TensorRT and the QDQ-native CPU runtimes).
"""

from __future__ import annotations

from marsedge.deploy.quantizers import QuantizeJob, keep_metadata, register_quantizer
from marsedge.runtimes.onnxruntime.quantize import quantize_ort
from marsedge.runtimes.onnxruntime.recipes import CPU_RECIPES


@register_quantizer("tensorrt", ("modelopt-int8", "qdq-s8s8-sym"), ("modelopt-int8",), ".qdq.onnx",
                    dla=True, per_node=True)
def quantize_tensorrt(job: QuantizeJob, recipe: str) -> dict:
    """nvidia-modelopt ONNX PTQ (in a child process) -> QDQ model for TensorRT explicit quantization;
    or `qdq-s8s8-sym`, ONNX Runtime's symmetric QDQ (the file the QDQ-native CPU runtimes run too)."""
    if recipe in CPU_RECIPES:
        return {**quantize_ort(job, recipe), "target_dla": job.options.dla}
    from marsedge.runtimes.tensorrt.modelopt_ptq import quantize_in_child

    quantize_in_child(job.src, job.dst, job.calib, job.spec, job.input_name, job.options.method,
                      job.options.dla, job.options.per_node)
    keep_metadata(job.src, job.dst)
    return {"tool": "nvidia-modelopt", "recipe": recipe, "format": "QDQ", "activations": "int8",
            "weights": "int8", "target_dla": job.options.dla, "calibrate_per_node": job.options.per_node}
