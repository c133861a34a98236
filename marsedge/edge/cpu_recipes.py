"""The INT8 layouts of `marsedge quantize --target cpu`: ONNX Runtime static-quantization recipes
(format, activation type, what stays FP32) and the node choices they imply. Measured against each
other by `benchmarks/edge_int8_layouts.py` and `benchmarks/cpu_runtimes.py`."""

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
    symmetric: bool = False  # activations symmetric around 0 (zero point 0: TensorRT's layout)


CPU_RECIPES = {
    "qop-u8s8": CpuRecipe("QOperator", "uint8"),
    "qop-u8s8-fp32-classifier": CpuRecipe("QOperator", "uint8", fp32_convs=("last",)),
    "qop-u8s8-all": CpuRecipe("QOperator", "uint8", fp32_convs=()),
    "qop-u8s8-all-int8-resize": CpuRecipe("QOperator", "uint8", fp32_convs=(), fp32_ops=()),
    "qop-u8s8-per-tensor": CpuRecipe("QOperator", "uint8", per_channel=False),
    "qdq-u8s8": CpuRecipe("QDQ", "uint8"),
    "qdq-u8s8-all": CpuRecipe("QDQ", "uint8", fp32_convs=()),
    "qdq-u8s8-all-int8-resize": CpuRecipe("QDQ", "uint8", fp32_convs=(), fp32_ops=()),  # for OpenVINO
    "qdq-s8s8": CpuRecipe("QDQ", "int8"),
    "qdq-s8s8-sym": CpuRecipe("QDQ", "int8", fp32_convs=(), symmetric=True),
    "qdq-u8s8-no-depthwise": CpuRecipe("QDQ", "uint8", fp32_convs=("first", "last", "depthwise")),
}
# `--recipe auto`: each is made and timed; the fastest passing the accuracy gate is written; the
# last keeps the most layers FP32 (the one reported when all fail)
AUTO_CPU_RECIPES = ("qop-u8s8-all", "qdq-u8s8-all", "qop-u8s8")
# OpenVINO's `--recipe auto` candidates: QDQ, the layout it loads (benchmarks/cpu_runtimes.py times them)
AUTO_OPENVINO_RECIPES = ("qdq-u8s8-all", "qdq-u8s8", "qdq-s8s8-sym")


def excluded_convs(model, recipe: CpuRecipe) -> list[str]:
    """Names of the Conv nodes a recipe keeps in FP32."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    keep = []
    if "first" in recipe.fp32_convs and convs:
        keep.append(convs[0].name)
    if "last" in recipe.fp32_convs and convs:
        keep.append(convs[-1].name)
    if "depthwise" in recipe.fp32_convs:
        keep += [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    return list(dict.fromkeys(keep))


def quantized_op_types(model, recipe: CpuRecipe) -> list[str]:
    """The op types of the model that ONNX Runtime quantizes in this format, less the recipe's FP32 ones."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    registry = QLinearOpsRegistry if recipe.format == "QOperator" else QDQRegistry
    present = dict.fromkeys(n.op_type for n in model.graph.node)
    return [op for op in present if op in registry and op not in recipe.fp32_ops]
