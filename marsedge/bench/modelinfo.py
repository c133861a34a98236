"""Size on disk, parameter count and multiply-accumulates (MACs) of a model file, where known.

- `.onnx`: parameters are the initializers' elements less quantization scales and zero points (so
  an INT8 model, QDQ or QOperator, counts the weights of its FP32 source; BatchNorm folded at export
  makes an ONNX model count a little fewer than its checkpoint). MACs are summed over convolutions
  and matrix products (Conv, QLinearConv, ConvInteger, ConvTranspose, Gemm, MatMul...), batch 1,
  symbolic axes at the benchmark's input size. Needs the `onnx` package; without it both are None.
- `.pt`: parameters of the loaded module; MACs from torch's FlopCounterMode (FLOPs / 2)
  when the backend exposes its torch module as `.model`.
- any other file (a built engine): size only (its runtime exposes no layer-wise cost).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

# input positions that hold quantization scales and zero points (not parameters), by op
_SCALE_INPUTS = {
    "QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2}, "ConvInteger": {2, 3}, "MatMulInteger": {2, 3},
    "QLinearConv": {1, 2, 4, 5, 6, 7}, "QLinearMatMul": {1, 2, 4, 5, 6, 7}, "QLinearAdd": {1, 2, 4, 5, 6, 7},
    "QLinearMul": {1, 2, 4, 5, 6, 7}, "QLinearSigmoid": {1, 2, 3, 4}, "QLinearLeakyRelu": {1, 2, 3, 4},
    "QLinearAveragePool": {1, 2, 3, 4}, "QLinearGlobalAveragePool": {1, 2, 3, 4},
}
# op -> (activation input, weight input): the ops whose multiply-accumulates are counted
_COMPUTE = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "ConvTranspose": (0, 1),
            "Gemm": (0, 1), "MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}


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


def _scale_inputs(node) -> set[int]:
    if node.op_type == "QLinearConcat":  # Y_scale, Y_zero_point, then (X, X_scale, X_zero_point)...
        return {0, 1} | {i for i in range(2, len(node.input)) if (i - 2) % 3}
    return _SCALE_INPUTS.get(node.op_type, set())


def onnx_params(model) -> int:
    graph = model.graph
    scales = {node.input[i] for node in graph.node for i in _scale_inputs(node) if i < len(node.input)}
    return int(sum(int(np.prod(t.dims)) for t in graph.initializer if t.name not in scales))


def onnx_macs(model, input_shape: tuple[int, int, int]) -> int | None:
    """MACs of one frame (batch 1) over convolutions and matrix products, or None if shapes are unknown.

    Shapes come from ONNX shape inference; where it stops (ONNX Runtime's quantized contrib ops), the
    model is run once on a blank frame with the compute nodes' outputs exposed, which gives them all."""
    graph = model.graph
    shapes = _inferred_shapes(model, input_shape)
    # a QDQ weight reaches its Conv through DequantizeLinear: its shape is the initializer's
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
    compute = [n for n in graph.node if n.op_type in _COMPUTE]
    needed = {name for n in compute for name in (n.input[_COMPUTE[n.op_type][0]], n.output[0])}
    unknown = [name for name in needed if not _known(shapes.get(name))]
    if unknown:
        shapes.update(_run_shapes(model, unknown, input_shape))
    total = 0
    for node in compute:
        a_at, w_at = _COMPUTE[node.op_type]
        a, w, out = shapes.get(node.input[a_at]), shapes.get(node.input[w_at]), shapes.get(node.output[0])
        if not all(_known(s) for s in (a, w, out)):
            return None
        if node.op_type == "ConvTranspose":
            total += int(np.prod(a)) * int(np.prod(w[1:]))
        elif "Conv" in node.op_type:  # every output element sums C_in/groups x kH x kW products
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        else:  # matrix products: every output element is a dot product over the shared dimension
            total += int(np.prod(out)) * int(a[-1])
    return total


def _known(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def _inferred_shapes(model, input_shape: tuple[int, int, int]) -> dict[str, list]:
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: input axes are pinned below
    initializers = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        for d, value in zip(inp.type.tensor_type.shape.dim, (1, *input_shape), strict=False):
            if not d.HasField("dim_value"):  # a symbolic axis (batch, or a dynamic size) takes the bench's
                d.dim_value = value
    with contextlib.suppress(Exception):  # an op it does not know: _run_shapes finds those shapes
        model = onnx.shape_inference.infer_shapes(model)
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    for vi in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                           for d in vi.type.tensor_type.shape.dim]
    return shapes


def _run_shapes(model, names: list[str], input_shape: tuple[int, int, int]) -> dict[str, list]:
    """Run the model once on a blank frame and return the shapes of the named tensors."""
    import onnxruntime as ort
    from onnx import helper

    model = type(model).FromString(model.SerializeToString())
    for name in names:
        model.graph.output.append(helper.make_empty_tensor_value_info(name))
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.zeros((1, *input_shape), np.float32)}
        return {name: list(out.shape) for name, out in zip(names, session.run(names, feed), strict=True)}
    except Exception:  # shapes stay unknown and the MACs are reported as such
        return {}


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
