"""FP32 ONNX -> INT8 ONNX, calibrated on real frames and gated on accuracy and speed.

    marsedge quantize student.onnx --calib data/ai4mars --eval data/ai4mars --target cpu

What the usual tools leave to luck, this module checks:

- Calibration data are real frames (a folder, a glob, or an AI4Mars split) through THE
  preprocessing; never random tensors. Fewer than `min_frames` (32) is refused, fewer than 500
  warned about, and a calibration frame that is also in the evaluation split is refused.
- `--target tensorrt`: nvidia-modelopt ONNX PTQ writes a QDQ model for TensorRT's explicit
  quantization (the only INT8 path left in TensorRT 11, which dropped the implicit calibrators).
  Non-quantized layers stay FP32 so the gate below can evaluate the model on ONNX Runtime CPU.
- `--target cpu`: ONNX Runtime's own quantizer, in the layout its CPU kernels fuse. Measured with
  `benchmarks/edge_int8_layouts.py` (MobileNetV2-1.0 + separable DeepLabv3+, 512x512, 2 threads,
  Xeon with avx512_vnni/amx_int8, runs interleaved; speed-up over FP32, range of 4 runs on a
  shared machine): uint8-activation layouts (QOperator or QDQ U8S8) 1.5-2.0x; QDQ S8S8 0.8-1.1x;
  QDQ U8S8 with the depthwise convs left FP32 0.8-1.0x; modelopt's QDQ (the TensorRT model)
  0.5-0.6x, i.e. about 2x slower than FP32. Our reading: MLAS's x86 VNNI/AMX GEMMs are u8 x s8,
  S8 activations miss them, and every FP32 island adds a Dequantize/Quantize pair per layer.
  Among the U8 layouts QOperator and QDQ are within run-to-run noise; the default is QOperator
  (its integer operators are explicit in the file, no runtime fusion pass needed) with the first
  conv (its input is the frame itself: an entropy-calibrated input range would clip bright
  pixels) and the classifier conv (its logits feed argmax) kept FP32 (`qop-u8s8`). Quantizing those
  two too (`qop-u8s8-all`) was ~10% faster in every run, so the default recipe, `auto`, tries
  `qop-u8s8-all` first and falls back to `qop-u8s8` only when the faster model fails the gate;
  every attempt is recorded in the metadata (`tried`).
- The gate (marsedge.edge.gate): FP32 and INT8 are both evaluated on a held-out labelled split;
  mIoU drop, per-class IoU drop and pixel agreement are printed and written into the model's
  metadata, and a drop above the tolerance (1.0 mIoU point) fails unless forced. For the CPU
  target, INT8 vs FP32 latency is measured too, and an INT8 model that is not faster is reported as
  such, not shipped silently.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.edge.gate import GateError, accuracy_gate, format_report, gate_reference, latency_ratio
from marsedge.edge.onnx_meta import QUANTIZATION, parse_props, set_props
from marsedge.errors import ConfigError, DataError, ModelError
from marsedge.io import atomic_write, sha256_file

WARN_FRAMES = 500
TARGETS = ("cpu", "tensorrt")
METHODS = ("entropy", "max")


@dataclass
class QuantizeOptions:
    target: str = "cpu"
    method: str = "entropy"
    n: int = 500
    min_frames: int = 32
    tolerance: float = 1.0  # mIoU points
    force: bool = False
    dla: bool = False
    threads: int | None = None
    seed: int = 0
    recipe: str = "auto"  # CPU target: "auto" (AUTO_CPU_RECIPES) or a key of CPU_RECIPES


@dataclass
class CalibrationSet:
    source: str
    paths: list[Path]
    names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unreadable frames, one "path: reason" each

    @property
    def usable(self) -> int:
        """Frames the calibration could read (known once it has run)."""
        return len(self.paths) - len(self.skipped)


def _is_ai4mars(root: Path) -> bool:
    return root.is_dir() and ((root / "msl").is_dir() or (root / "m2020").is_dir())


def calibration_set(uri: str, n: int, min_frames: int, split: str = "train", seed: int = 0) -> CalibrationSet:
    """Up to n real frames from a folder/glob or an AI4Mars split, spread evenly (seeded) over it."""
    root = Path(uri)
    if _is_ai4mars(root):
        from marsedge.data.ai4mars import list_items

        items = list_items(root, split)
        paths, source = [it.image for it in items], f"{root} ({split})"
    else:
        from marsedge.data.frames import list_frames

        paths, source = list_frames(uri), str(uri)
    if len(paths) > n:
        pick = np.sort(np.random.default_rng(seed).choice(len(paths), n, replace=False))
        paths = [paths[i] for i in pick]
    if len(paths) < min_frames:
        raise DataError(f"{uri}: {len(paths)} calibration frames, at least {min_frames} are required "
                        "(calibrating on too few frames clips real activations)")
    if len(paths) < WARN_FRAMES:
        warnings.warn(f"calibrating on {len(paths)} frames from {uri}; {WARN_FRAMES}+ recommended",
                      stacklevel=2)
    return CalibrationSet(source, list(paths), [Path(p).stem for p in paths])


def check_disjoint(calib: CalibrationSet, eval_paths: list[Path]) -> None:
    """Refuse calibration frames that are also evaluation frames (the gate would flatter INT8),
    by product name and by content (a renamed copy of a gold frame is still a gold frame)."""
    eval_names = {Path(p).stem for p in eval_paths}
    overlap = sorted(set(calib.names) & eval_names)
    if not overlap:
        eval_hashes = {sha256_file(p): Path(p).stem for p in eval_paths}
        overlap = sorted(f"{Path(p).stem} (same content as {eval_hashes[h]})" for p in calib.paths
                         if (h := sha256_file(p)) in eval_hashes)
    if overlap:
        raise DataError(f"{len(overlap)} calibration frame(s) are in the evaluation split, e.g. "
                        f"{overlap[0]}; calibrate on a disjoint split")


def frame_reader(calib: CalibrationSet, spec: PreprocessSpec, input_name: str):
    """An onnxruntime CalibrationDataReader that reads and preprocesses one frame at a time.

    It also supports ONNX Runtime's strided calibration (`__len__` + `set_range`): the calibrator
    then holds the activations of one stride (a few frames) at a time and merges ranges/histograms
    stride by stride, instead of every intermediate tensor of every frame (the MobileNetV2 student
    at 512x512 needs ~0.45 GiB a frame: 500 frames would need ~200 GiB)."""
    from onnxruntime.quantization import CalibrationDataReader

    from marsedge.data.frames import read_frame

    class FrameReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(calib.paths))

        def __len__(self) -> int:
            return len(calib.paths)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.paths = iter(calib.paths[start_index:end_index])

        def get_next(self) -> dict | None:
            for path in self.paths:  # a corrupt frame is named and skipped, as edge-run does
                try:
                    return {input_name: preprocess(read_frame(path), spec)[None]}
                except DataError as exc:
                    if str(exc) not in calib.skipped:  # (the calibrator may read a frame twice)
                        calib.skipped.append(str(exc))
                        warnings.warn(f"calibration frame skipped: {exc}", stacklevel=2)
            return None

        def rewind(self) -> None:
            self.set_range(0, len(calib.paths))

    return FrameReader()


def calibration_stride(n: int, most: int = 4) -> int:
    """The largest divisor of n not above `most` (ONNX Runtime wants strides that divide n)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


# ---------------------------------------------------------------- the two quantizers


def keep_metadata(src: Path, dst: Path) -> None:
    """Copy the source model's metadata_props onto a quantizer's output (modelopt drops them)."""
    import onnx

    source = onnx.load(str(src), load_external_data=False)
    model = onnx.load(str(dst))
    set_props(model, {p.key: p.value for p in source.metadata_props})
    onnx.save(model, str(dst))


@dataclass(frozen=True)
class CpuRecipe:
    """One ONNX Runtime static-quantization layout (`benchmarks/edge_int8_layouts.py` compares them)."""

    format: str  # "QOperator" (QLinearConv & co.) or "QDQ" (QuantizeLinear/DequantizeLinear pairs)
    activations: str  # "uint8" or "int8"
    per_channel: bool = True
    fp32_convs: tuple[str, ...] = ("first", "last")  # convs kept FP32: "first", "last", "depthwise"


CPU_RECIPES = {
    "qop-u8s8": CpuRecipe("QOperator", "uint8"),
    "qop-u8s8-fp32-classifier": CpuRecipe("QOperator", "uint8", fp32_convs=("last",)),
    "qop-u8s8-all": CpuRecipe("QOperator", "uint8", fp32_convs=()),
    "qop-u8s8-per-tensor": CpuRecipe("QOperator", "uint8", per_channel=False),
    "qdq-u8s8": CpuRecipe("QDQ", "uint8"),
    "qdq-s8s8": CpuRecipe("QDQ", "int8"),
    "qdq-u8s8-no-depthwise": CpuRecipe("QDQ", "uint8", fp32_convs=("first", "last", "depthwise")),
}
DEFAULT_CPU_RECIPE = "qop-u8s8"
# `--recipe auto`: fastest first; the first that passes the accuracy gate is written
AUTO_CPU_RECIPES = ("qop-u8s8-all", "qop-u8s8")


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


def quantize_cpu(src: Path, dst: Path, reader, method: str, recipe: str = DEFAULT_CPU_RECIPE) -> dict:
    """ONNX Runtime static quantization in one of the CPU_RECIPES layouts (see the module doc)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if recipe not in CPU_RECIPES:
        raise ConfigError(f"unknown CPU recipe {recipe!r} (choose from {', '.join(CPU_RECIPES)})")
    layout = CPU_RECIPES[recipe]
    prepared = dst.with_name(f".{dst.stem}.pre.onnx")
    try:
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        exclude = excluded_convs(onnx.load(str(prepared)), layout)
        quantize_static(
            str(prepared), str(dst), reader,
            quant_format=QuantFormat.QOperator if layout.format == "QOperator" else QuantFormat.QDQ,
            activation_type=QuantType.QUInt8 if layout.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, per_channel=layout.per_channel, nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.Entropy if method == "entropy" else CalibrationMethod.MinMax,
            extra_options={"CalibStridedMinMax": calibration_stride(len(reader))},
        )
    finally:
        prepared.unlink(missing_ok=True)
    keep_metadata(src, dst)
    return {"tool": "onnxruntime.quantization", "recipe": recipe, "format": layout.format,
            "activations": layout.activations,
            "weights": "int8 " + ("per-channel" if layout.per_channel else "per-tensor"),
            "excluded_nodes": exclude}


@contextmanager
def _ort_quantization_restored() -> Iterator[None]:
    """Undo nvidia-modelopt's monkeypatching of ONNX Runtime's quantization afterwards.

    modelopt replaces methods of ORT's calibrators and quantizers for the whole process
    (modelopt.onnx.quantization.ort_patching.patch_ort_modules), and edits ORT's operator
    registries in place (ort_utils.configure_ort: Concat, Relu, Transpose... deleted from the
    QOperator/QDQ registries). A later `--target cpu` quantization in the same process then crashes
    inside ORT's QLinearConv quantizer, or silently leaves Concat in float. Every attribute of the
    patched owners is put back as it was (any added one removed), and every registry's contents."""
    from onnxruntime.quantization import base_quantizer, calibrate, qdq_quantizer, registry

    owners = [calibrate, calibrate.CalibraterBase, calibrate.MinMaxCalibrater, calibrate.HistogramCalibrater,
              calibrate.HistogramCollector, qdq_quantizer.QDQQuantizer, base_quantizer.BaseQuantizer]
    tables = [registry.CommonOpsRegistry, registry.IntegerOpsRegistry, registry.QLinearOpsRegistry,
              registry.QDQRegistry]
    saved = [(owner, dict(vars(owner))) for owner in owners]
    saved_tables = [(table, dict(table)) for table in tables]
    try:
        yield
    finally:
        for owner, before in saved:
            for name in set(vars(owner)) - set(before):
                delattr(owner, name)
            for name, value in before.items():
                if vars(owner).get(name) is not value:
                    setattr(owner, name, value)
        for table, before in saved_tables:
            table.clear()
            table.update(before)


def quantize_tensorrt(src: Path, dst: Path, reader, method: str, dla: bool) -> dict:
    """nvidia-modelopt ONNX PTQ -> QDQ model for TensorRT explicit quantization."""
    from modelopt.onnx.quantization import quantize

    with _ort_quantization_restored():
        quantize(str(src), quantize_mode="int8", calibration_data_reader=reader,
                 calibration_method=method, calibration_eps=["cpu"], output_path=str(dst),
                 high_precision_dtype="fp32", target_dla=dla, log_level="WARNING",
                 calibrate_per_node=len(reader) > 64)  # bounded memory on big calibration sets
    keep_metadata(src, dst)
    return {"tool": "nvidia-modelopt", "format": "QDQ", "activations": "int8", "weights": "int8",
            "target_dla": dla}


# ---------------------------------------------------------------- the command


def quantize_model(src: str | Path, calib: str, out: str | Path | None, eval_root: str | None,
                   options: QuantizeOptions, calib_split: str = "train",
                   eval_split: str = "gold-min1") -> tuple[Path, dict]:
    """Calibrate, quantize, gate; writes OUT (metadata included) only when the gate passes or is forced."""
    import onnx

    src = Path(src)
    if options.target not in TARGETS:
        raise ConfigError(f"--target must be one of {TARGETS}, got {options.target!r}")
    if options.method not in METHODS:
        raise ConfigError(f"--method must be one of {METHODS}, got {options.method!r}")
    if options.dla and options.target != "tensorrt":
        raise ConfigError("--dla applies to --target tensorrt only")
    if options.recipe != "auto" and options.recipe not in CPU_RECIPES:
        raise ConfigError(f"--recipe must be auto or one of {', '.join(CPU_RECIPES)}, got {options.recipe!r}")
    source_model = onnx.load(str(src))
    meta = parse_props({p.key: p.value for p in source_model.metadata_props}, src)
    if meta.quantization:
        raise ModelError(f"{src} is already quantized; quantize the FP32 export")
    out = Path(out) if out else src.with_name(f"{src.stem}.int8.onnx")
    eval_root = eval_root or (calib if _is_ai4mars(Path(calib)) else None)
    if eval_root is None:
        raise ConfigError("the accuracy gate needs a labelled AI4Mars tree: pass --eval ROOT")

    from marsedge.data.ai4mars import list_items

    calib_set = calibration_set(calib, options.n, options.min_frames, calib_split, options.seed)
    check_disjoint(calib_set, [it.image for it in list_items(eval_root, eval_split)])
    reader = frame_reader(calib_set, meta.preprocess, source_model.graph.input[0].name)
    print(f"calibrating on {len(calib_set.paths)} frames from {calib_set.source} ({options.method})")

    tmp = out.with_name(f".{out.stem}.tmp.onnx")
    try:
        if options.target == "cpu":
            how, gate = _quantize_cpu_gated(src, tmp, reader, options, calib_set, eval_root, eval_split)
        else:
            how = quantize_tensorrt(src, tmp, reader, options.method, options.dla)
            _check_usable(calib_set, options.min_frames)
            reference = gate_reference(src, eval_root, eval_split, options.threads)
            gate = accuracy_gate(reference, tmp, options.tolerance, options.threads)
        record = {"precision": "int8", "target": options.target, "method": options.method, **how,
                  "calibration": {"source": calib_set.source, "frames": calib_set.usable,
                                  "skipped": calib_set.skipped},
                  "source_onnx_sha256": sha256_file(src), "gate": gate}
        if options.target == "cpu":
            first = preprocess(_first_frame(calib_set), meta.preprocess)[None]
            record["latency"] = latency_ratio(src, tmp, first, options.threads)
        print(format_report(record))
        if not gate["passed"] and not options.force:
            raise GateError(f"{src}: INT8 loses {gate['miou_drop']:.2f} mIoU points (> {options.tolerance}); "
                            "not written (use --force to keep it anyway)")
        quantized = onnx.load(str(tmp))
        set_props(quantized, {QUANTIZATION: json.dumps(record)})
        atomic_write(out, lambda p: onnx.save(quantized, str(p)))
    finally:
        tmp.unlink(missing_ok=True)
    return out, record


def _check_usable(calib: CalibrationSet, min_frames: int) -> None:
    """After the first calibration pass (which names the unreadable frames): enough were read?"""
    if calib.usable < min_frames:
        raise DataError(f"{calib.source}: {len(calib.skipped)} unreadable calibration frames leave fewer "
                        f"than {min_frames}")


def _quantize_cpu_gated(src: Path, tmp: Path, reader, options: QuantizeOptions, calib: CalibrationSet,
                        eval_root: str, eval_split: str) -> tuple[dict, dict]:
    """Quantize with `options.recipe`, or with each AUTO_CPU_RECIPES layout in turn (fastest first)
    until one passes the gate. Leaves the chosen model at `tmp`: the first that passed, else (all
    failed) the last one tried, which keeps the most layers FP32. Every attempt goes into `tried`."""
    recipes = AUTO_CPU_RECIPES if options.recipe == "auto" else (options.recipe,)
    tried = []
    reference = None
    for recipe in recipes:
        how = quantize_cpu(src, tmp, reader, options.method, recipe)
        if reference is None:
            _check_usable(calib, options.min_frames)
            reference = gate_reference(src, eval_root, eval_split, options.threads)
        gate = accuracy_gate(reference, tmp, options.tolerance, options.threads)
        tried.append({"recipe": recipe, "miou_drop": gate["miou_drop"], "passed": gate["passed"]})
        if gate["passed"]:
            break
        if recipe != recipes[-1]:
            print(f"recipe {recipe}: mIoU drop {gate['miou_drop']:+.2f} points fails the gate; "
                  "trying the next layout")
    return {**how, "tried": tried}, gate


def _first_frame(calib: CalibrationSet) -> np.ndarray:
    from marsedge.data.frames import read_frame

    for path in calib.paths:
        try:
            return read_frame(path)
        except DataError:
            continue
    raise DataError(f"{calib.source}: no calibration frame could be read")
