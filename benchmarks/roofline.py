"""The roofline of a marsedge ONNX network on this CPU, for benchmarks/cpu_runtimes.py.

Per op type of the FP32 graph (1x1 convolutions, other dense convolutions, depthwise convolutions,
Resize, the rest), what one frame must compute (MACs) and move (bytes of the op's inputs, weights and
outputs, at INT8 or FP32 width), and the two floors those set on this CPU: compute (2 x MACs / the
best GEMM rate of that precision) and memory (bytes / the copy bandwidth of a large numpy array,
read + write). The larger of the two is the op type's floor and says whether it is compute- or
memory-bound. Beside it, what each runtime spends on that op type, from its own per-node profile
(ONNX Runtime's session profiling, OpenVINO's PERF_COUNT), and its distance from the floor.

Caveats, so the numbers are read right: activations fused into a convolution (Clip, Relu) are
counted as free; per-op bytes assume every tensor goes to memory and back, while a small tensor may
stay in cache (so a memory floor is a bandwidth floor for DRAM, not a law); profiles add overhead,
so their totals sit a little above the timed medians (both are printed). Reorders, QuantizeLinear
and other layout work the graph does not ask for have a floor of zero.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

CATEGORIES = ("conv 1x1", "conv kxk", "depthwise", "resize", "other", "layout & (de)quantize")
FUSED = {"Clip", "Relu", "BatchNormalization", "Identity"}  # folded into the op before them
# runtime node types of work the graph never asked for
LAYOUT = {"Reorder", "ReorderInput", "ReorderOutput", "Transpose", "QuantizeLinear", "DequantizeLinear",
          "FakeQuantize", "Convert", "DynamicQuantizeLinear"}
BY_TYPE = {"Interpolate": "resize", "Resize": "resize", "Upsample": "resize", "GroupConvolution": "depthwise"}


def _category(node, shapes: dict) -> str:
    if node.op_type == "Resize":
        return "resize"
    if node.op_type != "Conv":
        return "other"
    attrs = {a.name: a for a in node.attribute}
    group = attrs["group"].i if "group" in attrs else 1
    channels = shapes.get(node.input[0], [0, 0])[1]
    if group > 1 and group == channels:
        return "depthwise"
    kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else []
    return "conv 1x1" if kernel and all(k == 1 for k in kernel) else "conv kxk"


def op_costs(onnx_path: Path) -> tuple[list[dict], dict[str, str]]:
    """Per node of the FP32 graph: name, category, MACs, activation elements in/out, weight elements;
    and a map of every node and output-tensor name to its category (to read the runtimes' profiles)."""
    import onnx
    from onnx import shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    graph = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.input, *graph.value_info, *graph.output]}
    dims = {t.name: list(t.dims) for t in graph.initializer}
    weights = {name: int(np.prod(d)) for name, d in dims.items()}
    costs, names = [], {}
    for node in graph.node:
        # a fused activation is its producer's (runtimes name the fused kernel after either)
        category = names.get(node.input[0], "other") if node.op_type in FUSED else _category(node, shapes)
        for key in (node.name, *node.output):
            names[key] = category
        if node.op_type in FUSED:
            continue
        out = int(np.prod(shapes.get(node.output[0], [0])))
        ins = sum(int(np.prod(shapes.get(i, [0]))) for i in node.input if i and i not in weights)
        macs = 0
        if node.op_type == "Conv":
            w = dims.get(node.input[1]) or shapes[node.input[1]]
            macs = out * int(np.prod(w[1:]))  # each output: Cin/group x kh x kw
        costs.append({"name": node.name, "category": category, "macs": macs, "in": ins, "out": out,
                      "weights": sum(weights.get(i, 0) for i in node.input)})
    return costs, names


def copy_bandwidth(megabytes: int = 256, reps: int = 5) -> float:
    """Bytes/s of a large numpy copy (read + write), the best of `reps`: the memory roof."""
    src = np.ones(megabytes * 2 ** 20 // 8)
    dst = np.empty_like(src)
    best = min(_seconds(lambda: np.copyto(dst, src)) for _ in range(reps))
    return 2 * src.nbytes / best


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def gemm_rates(threads: int, n: int = 2048, reps: int = 5) -> dict:
    """The compute roofs: best INT8 (torch._int_mm, or ONNX Runtime's MatMulInteger u8 x s8 where
    faster), BF16 and FP32 GEMM rates of this CPU, n^3, in op/s (2 ops per MAC)."""
    import torch

    torch.set_num_threads(threads)
    rates = {}
    a8, b8 = (torch.randint(-128, 127, (n, n), dtype=torch.int8) for _ in range(2))
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    for name, fn in (("int8", lambda: torch._int_mm(a8, b8)), ("bf16", lambda: a16 @ b16),
                     ("fp32", lambda: a32 @ b32)):
        try:
            fn()
            rates[name] = 2 * n ** 3 / min(_seconds(fn) for _ in range(reps))
        except Exception as exc:  # _int_mm needs a CPU kernel this build may lack
            rates[name] = None
            rates[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:200]
    rates["int8_torch"] = rates["int8"]
    rates["int8_ort_matmul_integer"] = ort_matmul_integer_rate(threads, n, reps)
    rates["int8"] = max(r for r in (rates["int8_torch"], rates["int8_ort_matmul_integer"]) if r)
    return rates


def ort_matmul_integer_rate(threads: int, n: int = 2048, reps: int = 5) -> float:
    """op/s of ONNX Runtime's MatMulInteger u8 x s8 (the GEMM under its QLinearConv), n^3."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(-128, 127, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [b])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    session.run(None, {"a": a})
    return 2 * n ** 3 / min(_seconds(lambda: session.run(None, {"a": a})) for _ in range(reps))


def floors(costs: list[dict], rates: dict[str, float | None], bandwidth: float) -> dict:
    """{precision: {category: macs_g, mbytes, compute_ms, memory_ms, bound, floor_ms}} for "int8"
    (convolutions and the rest at 1 byte an element, Resize at 4: it stays FP32 in every recipe)
    and "fp32", and each precision's whole-network floor (the sum of its op types' floors)."""
    out = {}
    for precision in ("int8", "fp32"):
        rate = rates.get(precision)
        if not rate:
            continue
        per = defaultdict(lambda: {"macs": 0, "bytes": 0})
        for c in costs:
            width = 4 if precision == "fp32" or c["category"] == "resize" else 1
            per[c["category"]]["macs"] += c["macs"]
            per[c["category"]]["bytes"] += width * (c["in"] + c["out"] + c["weights"])
        table = {}
        for category in CATEGORIES:
            if category not in per:
                continue
            macs, nbytes = per[category]["macs"], per[category]["bytes"]
            compute_ms = 1000 * 2 * macs / (rate if macs else float("inf"))
            memory_ms = 1000 * nbytes / bandwidth
            table[category] = {"macs_g": round(macs / 1e9, 3), "mbytes": round(nbytes / 1e6, 2),
                               "compute_ms": round(compute_ms, 3), "memory_ms": round(memory_ms, 3),
                               "bound": "compute" if compute_ms >= memory_ms else "memory",
                               "floor_ms": round(max(compute_ms, memory_ms), 3)}
        out[precision] = {"ops": table, "floor_ms": round(sum(t["floor_ms"] for t in table.values()), 3)}
    return out


def _categorise(name: str, node_type: str, names: dict[str, str]) -> str:
    """A runtime's profiled node -> category: layout work by its type; else the longest graph node or
    tensor name its name starts with (runtimes keep them: "<node>_quant_token_8", "<node>/WithoutBiases");
    else by type."""
    if node_type in LAYOUT:
        return "layout & (de)quantize"
    match = max((k for k in names if k and name.startswith(k)), key=len, default=None)
    if match:
        return names[match]
    return BY_TYPE.get(node_type, "other")


def profile_onnxruntime(path: Path, threads: int, frame: np.ndarray, runs: int, names: dict) -> dict:
    """ms per frame by category, from ONNX Runtime's own per-node profile of `runs` frames."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: frame}
        session.run(None, feed)  # warm-up, dropped below with the first run's events
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (runs + 1)
    totals = defaultdict(float)
    for e in kernels[per_run:]:
        category = _categorise(e["name"][:-len("_kernel_time")], e["args"].get("op_name", ""), names)
        totals[category] += e["dur"] / 1000 / runs
    return dict(totals)


def profile_openvino(path: Path, threads: int, frame: np.ndarray, runs: int, names: dict,
                     precision: str = "f32") -> dict:
    """ms per frame by category, from OpenVINO's PERF_COUNT of `runs` frames (the backend's settings)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "PERF_COUNT": True, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads)})
    request = compiled.create_infer_request()
    request.infer({0: frame})
    totals = defaultdict(float)
    for _ in range(runs):
        request.infer({0: frame})
        for info in request.get_profiling_info():
            if info.status.name != "NOT_RUN":
                category = _categorise(info.node_name, info.node_type, names)
                totals[category] += info.real_time.total_seconds() * 1000 / runs
    return dict(totals)


def distances(roof: dict, profiles: dict[str, tuple[str, dict]]) -> dict:
    """{path: {category: {ms, x_floor}}}: each profiled path against its precision's floors."""
    out = {}
    for path, (precision, ms) in profiles.items():
        ops = roof.get(precision, {}).get("ops", {})
        out[path] = {"precision": precision, "total_ms": round(sum(ms.values()), 2)}
        for category, value in ms.items():
            floor = ops.get(category, {}).get("floor_ms")
            out[path][category] = {"ms": round(value, 2),
                                   "x_floor": round(value / floor, 2) if floor else None}
    return out


def _cell(d: dict | None) -> str:
    if not d:
        return ""
    return f"{d['ms']:.2f}" + (f" ({d['x_floor']:.1f}x)" if d["x_floor"] else "")


def markdown(result: dict) -> list[str]:
    """The roofline section of cpu_runtimes_<cpu model>.md."""
    lines = ["", f"Roofline (memory roof: numpy copy {result['bandwidth_gbs']:.1f} GB/s, read + write; "
             "compute roofs: the GEMM rates above):"]
    for precision, table in result["floors"].items():
        paths = [p for p, d in result["distances"].items() if d["precision"] == precision]
        lines += ["", f"{precision.upper()} floors ({table['floor_ms']:.2f} ms in all) and the profiled "
                  "paths (ms per frame, x the floor):", "",
                  "| op type | GMACs | MB moved | compute floor ms | memory floor ms | bound | "
                  + " | ".join(paths) + " |", "|---|---|---|---|---|---|" + "---|" * len(paths)]
        for category in CATEGORIES:
            t = table["ops"].get(category)
            cells = " | ".join(_cell(result["distances"][p].get(category)) for p in paths)
            if t:
                lines.append(f"| {category} | {t['macs_g']:.3f} | {t['mbytes']:.1f} | {t['compute_ms']:.2f} "
                             f"| {t['memory_ms']:.2f} | {t['bound']} | {cells} |")
            elif cells.strip(" |"):
                lines.append(f"| {category} | 0 | 0 | 0 | 0 | none asked | {cells} |")
        timed = result["timed_ms"]
        lines.append("| profile total vs timed median | | | | | | " + " | ".join(
            f"{result['distances'][p]['total_ms']:.1f} vs {timed[p]:.1f}" for p in paths) + " |")
    return lines


def network_roofline(fp32: Path, files: dict[str, Path], ms: dict[str, float], rates: dict,
                     frame: np.ndarray, threads: int, runs: int) -> dict:
    """The floors of the network in `fp32`, and the profiles of FP32 and of the fastest INT8 file of
    each runtime (`ms`: the timed medians, keyed "onnxruntime int8 RECIPE" / "openvino int8 RECIPE";
    `files`: RECIPE -> file) against them."""
    costs, names = op_costs(fp32)
    bandwidth = copy_bandwidth()
    roof = floors(costs, rates, bandwidth)
    profiles = {"onnxruntime fp32": ("fp32", profile_onnxruntime(fp32, threads, frame, runs, names))}
    best_ort = min((k for k in ms if k.startswith("onnxruntime int8 ")), key=ms.get)
    recipe = best_ort.split()[-1]
    profiles[best_ort] = ("int8", profile_onnxruntime(files[recipe], threads, frame, runs, names))
    ov_int8 = [k for k in ms if k.startswith("openvino int8 ") and k.split()[-1] in files]
    if ov_int8:
        profiles["openvino fp32"] = ("fp32", profile_openvino(fp32, threads, frame, runs, names))
        best_ov = min(ov_int8, key=ms.get)
        recipe = best_ov.split()[-1]
        profiles[best_ov] = ("int8", profile_openvino(files[recipe], threads, frame, runs, names))
    return {"bandwidth_gbs": round(bandwidth / 1e9, 2), "floors": roof, "profile_runs": runs,
            "distances": distances(roof, profiles), "timed_ms": {k: round(ms[k], 2) for k in profiles}}
