"""Size on disk, parameter count and multiply-accumulates (MACs) of a model file, where known.

- `.onnx`: parameters are the initializers' elements, less the scales and zero points of
  Quantize/DequantizeLinear nodes (so an INT8 QDQ model counts the same weights as its FP32 source);
  MACs are summed over Conv, ConvTranspose, Gemm and MatMul with shapes from ONNX shape inference at
  the benchmark's input size. Needs the `onnx` package; without it both are None.
- `.pt`: parameters from the checkpoint's state dict; MACs from torch's FlopCounterMode (FLOPs / 2)
  when the backend exposes its torch module as `.model`.
- `.engine`: size only (TensorRT does not expose a layer-wise cost).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def model_info(path: str | Path, input_shape: tuple[int, int, int], backend=None) -> dict:
    path = Path(path)
    info = {"size_bytes": path.stat().st_size, "params": None, "macs": None}
    if path.suffix == ".onnx":
        info.update(onnx_info(path, input_shape))
    elif path.suffix == ".pt" and backend is not None and getattr(backend, "model", None) is not None:
        info.update(torch_info(backend.model, input_shape))
    return info


def onnx_info(path: Path, input_shape: tuple[int, int, int]) -> dict:
    try:
        import onnx
    except ImportError:
        return {}
    model = onnx.load(str(path))
    return {"params": onnx_params(model), "macs": onnx_macs(model, input_shape)}


def onnx_params(model) -> int:
    graph = model.graph
    qdq_aux = {name for node in graph.node if node.op_type in _QDQ for name in node.input[1:]}
    return int(sum(int(np.prod(t.dims)) for t in graph.initializer if t.name not in qdq_aux))


def onnx_macs(model, input_shape: tuple[int, int, int]) -> int | None:
    """MACs of one frame (batch 1) over Conv/ConvTranspose/Gemm/MatMul, or None if shapes are unknown."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: shapes are rewritten below
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    for inp in graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        for d, value in zip(dims, (1, *input_shape), strict=False):
            d.ClearField("dim_param")
            d.dim_value = value
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    for vi in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    # a QDQ weight reaches its Conv through DequantizeLinear: its shape is the initializer's
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        a, w, out = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
        known = [s for s in (a, w, out) if s is not None]
        if len(known) < 3 or any(d is None or d == 0 for s in known for d in s):
            return None
        if node.op_type == "Conv":
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type == "ConvTranspose":
            total += int(np.prod(a)) * int(np.prod(w[1:]))
        else:  # Gemm / MatMul: every output element is a dot product over the shared dimension
            total += int(np.prod(out)) * int(a[-1])
    return total


def torch_info(module, input_shape: tuple[int, int, int]) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in module.parameters())
    device = next(module.parameters()).device
    x = torch.zeros((1, *input_shape), device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    return {"params": int(params), "macs": int(counter.get_total_flops() // 2)}
