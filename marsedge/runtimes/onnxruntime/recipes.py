"""The INT8 layouts of `marsedge quantize --target cpu`: ONNX Runtime static-quantization recipes
(format, activation type, what stays FP32). Every CPU runtime loads the files of some of them (its
`int8_formats` in the registry); the node choices they imply are the quantizer's (`quantize.py`).
Measured against each other by `benchmarks/edge_int8_layouts.py` and `benchmarks/cpu_runtimes.py`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CpuRecipe:
    """One ONNX Runtime static-quantization layout (`benchmarks/edge_int8_layouts.py` compares them)."""

    format: str  # "QOperator" (QLinearConv & co.) or "QDQ" (QuantizeLinear/DequantizeLinear pairs)
    activations: str  # "uint8" or "int8"
    per_channel: bool = True
    fp32_convs: tuple[str, ...] = ("first", "last")  # convs kept FP32: "first", "last", "depthwise"
    fp32_ops: tuple[str, ...] = ("Resize",)  # op types kept FP32 (their int8 kernel is slower here)
    symmetric: bool = False  # activations symmetric around 0 (zero point 0: a GPU runtime's layout)


CPU_RECIPES = {
    "qop-u8s8": CpuRecipe("QOperator", "uint8"),
    "qop-u8s8-fp32-classifier": CpuRecipe("QOperator", "uint8", fp32_convs=("last",)),
    "qop-u8s8-all": CpuRecipe("QOperator", "uint8", fp32_convs=()),
    "qop-u8s8-all-int8-resize": CpuRecipe("QOperator", "uint8", fp32_convs=(), fp32_ops=()),
    "qop-u8s8-per-tensor": CpuRecipe("QOperator", "uint8", per_channel=False),
    "qdq-u8s8": CpuRecipe("QDQ", "uint8"),
    "qdq-u8s8-all": CpuRecipe("QDQ", "uint8", fp32_convs=()),
    "qdq-u8s8-all-int8-resize": CpuRecipe("QDQ", "uint8", fp32_convs=(), fp32_ops=()),  # QDQ-native runtimes
    "qdq-s8s8": CpuRecipe("QDQ", "int8"),
    "qdq-s8s8-sym": CpuRecipe("QDQ", "int8", fp32_convs=(), symmetric=True),
    "qdq-u8s8-no-depthwise": CpuRecipe("QDQ", "uint8", fp32_convs=("first", "last", "depthwise")),
}
# `--recipe auto`: each is made and timed; the fastest passing the accuracy gate is written; the
# last keeps the most layers FP32 (the one reported when all fail)
AUTO_CPU_RECIPES = ("qop-u8s8-all", "qdq-u8s8-all", "qop-u8s8")
