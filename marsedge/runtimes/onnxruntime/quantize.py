"""`quantize --target cpu` (output MODEL.int8.onnx): ONNX Runtime's own quantizer in the layouts its
CPU kernels fuse (`recipes.CPU_RECIPES`), on calibration ranges computed once and shared by every
candidate. Workstation only: imported by `marsedge.deploy` through the registry, never by the rover.

u8 activations x s8 weights (MLAS's VNNI GEMMs are u8 x s8; S8 activations miss them). Resize stays
FP32 in every recipe: ORT's uint8 Resize kernel took 6.2 ms of a 22.9 ms 512 px run (two nodes)
where the FP32 one takes 1.3-1.9 ms (ONNX Runtime's profile). `qop-*` are QOperator files
(QLinearConv & co., explicit in the file); `qdq-*` are QuantizeLinear / DequantizeLinear files that
ONNX Runtime fuses at load and the QDQ-native runtimes run as INT8. `qdq-s8s8-sym` (symmetric int8
activations and weights, the layout of a GPU runtime's explicit quantization) is the one file meant
for both a GPU and the CPU. `benchmarks/edge_int8_layouts.py` and `benchmarks/cpu_runtimes.py` measure
the layouts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from marsedge.deploy.quantizers import QuantizeJob, keep_metadata, register_quantizer
from marsedge.runtimes.onnxruntime.recipes import AUTO_CPU_RECIPES, CPU_RECIPES, CpuRecipe


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


def _prepared(job: QuantizeJob) -> Path:
    """ORT's pre-processing (shape inference, graph optimisation) of the source, once per job."""
    if "prepared" not in job.shared:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = job.workdir() / "prepared.onnx"
        quant_pre_process(str(job.src), str(prepared), skip_symbolic_shape=True)
        job.shared["prepared"] = prepared
    return job.shared["prepared"]


def _calibration_method(job: QuantizeJob):
    from onnxruntime.quantization import CalibrationMethod

    return CalibrationMethod.Entropy if job.options.method == "entropy" else CalibrationMethod.MinMax


def _ranges(job: QuantizeJob) -> Path:
    """ONNX Runtime's calibration, once per job: the ranges of the outputs of every op type that
    either format quantizes (Resize included), saved as ORT's calibration cache, which every
    candidate's quantize_static then loads instead of calibrating again (the symmetric recipe
    derives its zero-point-0 parameters from the same ranges)."""
    if "ranges" not in job.shared:
        import onnx
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        from marsedge.deploy.calibration import calibration_stride, frame_reader

        prepared = _prepared(job)
        present = dict.fromkeys(n.op_type for n in onnx.load(str(prepared)).graph.node)
        op_types = [op for op in present if op in QLinearOpsRegistry or op in QDQRegistry]
        reader = frame_reader(job.calib, job.spec, job.input_name, job.options.progress)
        stride = calibration_stride(len(reader))
        with tempfile.TemporaryDirectory(dir=job.workdir()) as tmp:
            calibrator = create_calibrator(prepared, op_types, calibrate_method=_calibration_method(job),
                                           augmented_model_path=str(Path(tmp) / "aug.onnx"))
            for start in range(0, len(reader), stride):  # strided: bounded memory (calibration's doc)
                reader.set_range(start, start + stride)
                calibrator.collect_data(reader)
            ranges = calibrator.compute_data()
        job.shared["ranges"] = job.workdir() / "ranges.json"
        save_tensors_data(ranges, job.shared["ranges"])
    return job.shared["ranges"]


def quantize_ort(job: QuantizeJob, recipe: str) -> dict:
    """ONNX Runtime static quantization in one of the CPU_RECIPES layouts (see the module doc),
    on the job's shared calibration ranges."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    layout = CPU_RECIPES[recipe]
    ranges = _ranges(job)
    prepared = _prepared(job)
    model = onnx.load(str(prepared))
    exclude, op_types = excluded_convs(model, layout), quantized_op_types(model, layout)
    quantize_static(
        str(prepared), str(job.dst), None,
        quant_format=QuantFormat.QOperator if layout.format == "QOperator" else QuantFormat.QDQ,
        activation_type=QuantType.QUInt8 if layout.activations == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8, per_channel=layout.per_channel, nodes_to_exclude=exclude,
        op_types_to_quantize=op_types,
        calibrate_method=_calibration_method(job), calibration_cache_path=ranges,
        extra_options={"ActivationSymmetric": layout.symmetric, "WeightSymmetric": True},
    )
    keep_metadata(job.src, job.dst)
    return {"tool": "onnxruntime.quantization", "recipe": recipe, "format": layout.format,
            "activations": layout.activations + (" symmetric" if layout.symmetric else ""),
            "weights": "int8 " + ("per-channel" if layout.per_channel else "per-tensor"),
            "excluded_nodes": exclude, "fp32_ops": list(layout.fp32_ops)}


register_quantizer("cpu", tuple(CPU_RECIPES), AUTO_CPU_RECIPES, ".int8.onnx",
                   measure_latency=True)(quantize_ort)
