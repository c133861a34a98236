"""TensorRT engines: names, sidecars, stale/foreign refusal, the build plan for TensorRT 10 and 11
(no TensorRT needed: small stand-ins for the tensorrt module's enums, Polygraphy's own objects, and
tiny ONNX graphs written from the ONNX operator spec), and a real build where TensorRT and a GPU exist."""

from __future__ import annotations

import enum
import json
import shutil
import sys
import types

import numpy as np
import pytest

from marsedge.cli import main as cli_main
from marsedge.errors import ConfigError, ModelError
from marsedge.runtimes.tensorrt import plan as trt_plan
from marsedge.runtimes.tensorrt.build import build_engine
from marsedge.runtimes.tensorrt.plan import BuildOptions, Capabilities, inspect_onnx, plan_build
from marsedge.runtimes.tensorrt.runner import static_batch
from marsedge.runtimes.tensorrt.sidecar import (
    Platform,
    check_sidecar,
    cuda_device,
    engine_path,
    read_sidecar,
    rebuild_hint,
    sidecar_path,
    write_sidecar,
)

HERE = Platform(tensorrt="10.3.0", gpu="Orin", compute_capability="8.7")


def fake_trt(version: str) -> types.ModuleType:
    """The enums of a tensorrt module as its bindings list them: 10.x has BuilderFlag.FP16/INT8 and
    the STRONGLY_TYPED flag; 11.0 has neither and no DLA; 11.4 brings DeviceType.DLA and GPU_FALLBACK
    back (JetPack 7.2.2+) without the precision flags."""
    major, minor = (int(v) for v in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    flags = ["TF32", "REFIT", "DEBUG"]
    devices = ["GPU"]
    creation = []
    if major < 11:
        flags += ["FP16", "INT8", "GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"]
        devices.append("DLA")
        creation.append("STRONGLY_TYPED")
    elif minor >= 4:
        flags.append("GPU_FALLBACK")
        devices.append("DLA")
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    trt.DeviceType = enum.IntEnum("DeviceType", devices)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation or ["NONE"])
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])
    return trt


def tiny_onnx(path, kind: str = "fp32", batch: int | str = 1, target: str | None = None):
    """A 1x1-conv graph on a Nx1x4x4 input, written with onnx.helper from the operator spec:
    fp32 (Conv), qdq (QuantizeLinear -> DequantizeLinear -> Conv), qoperator (QuantizeLinear ->
    QLinearConv -> DequantizeLinear, ONNX Runtime's CPU layout), fp16 (Cast to float16 -> Conv with
    float16 weights -> Cast back). `target` writes marsedge.quantization metadata."""
    from onnx import TensorProto, checker, helper, save

    f32, f16, u8, i8, i32 = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8, TensorProto.INT8,
                             TensorProto.INT32)
    image = helper.make_tensor_value_info("image", f32, [batch, 1, 4, 4])
    logits = helper.make_tensor_value_info("logits", f32, [batch, 6, 4, 4])
    init = [helper.make_tensor("s", f32, [], [0.02]), helper.make_tensor("zp", u8, [], [128])]
    weights = helper.make_tensor("w", f32, [6, 1, 1, 1], [0.5, -0.5, 1.0, -1.0, 0.25, 2.0])
    if kind == "fp32":
        nodes, init = [helper.make_node("Conv", ["image", "w"], ["logits"])], [weights]
    elif kind == "qdq":
        nodes = [helper.make_node("QuantizeLinear", ["image", "s", "zp"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
                 helper.make_node("Conv", ["dq", "w"], ["logits"])]
        init.append(weights)
    elif kind == "qoperator":
        init += [helper.make_tensor("wq", i8, [6, 1, 1, 1], [25, -25, 50, -50, 12, 100]),
                 helper.make_tensor("ws", f32, [], [0.02]), helper.make_tensor("wzp", i8, [], [0]),
                 helper.make_tensor("b", i32, [6], [0] * 6)]
        nodes = [helper.make_node("QuantizeLinear", ["image", "s", "zp"], ["xq"]),
                 helper.make_node("QLinearConv", ["xq", "s", "zp", "wq", "ws", "wzp", "s", "zp", "b"],
                                  ["yq"]),
                 helper.make_node("DequantizeLinear", ["yq", "s", "zp"], ["logits"])]
    else:  # fp16
        init = [helper.make_tensor("w16", f16, [6, 1, 1, 1], [0.5, -0.5, 1.0, -1.0, 0.25, 2.0])]
        nodes = [helper.make_node("Cast", ["image"], ["x16"], to=f16),
                 helper.make_node("Conv", ["x16", "w16"], ["y16"]),
                 helper.make_node("Cast", ["y16"], ["logits"], to=f32)]
    graph = helper.make_graph(nodes, "tiny", [image], [logits], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    checker.check_model(model)
    props = {"marsedge.class_table": json.dumps([{"id": i, "name": f"c{i}"} for i in range(6)]),
             "marsedge.preprocess": json.dumps({"height": 4, "width": 4, "channels": 1, "gain": 1.5})}
    if target:
        props["marsedge.quantization"] = json.dumps({"precision": "int8", "target": target})
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    save(model, str(path))
    return path


def _engine_with_sidecar(folder, onnx_bytes=b"onnx-v1", **overrides):
    onnx = folder / "student.int8.onnx"
    onnx.write_bytes(onnx_bytes)
    engine = engine_path(onnx, "int8")
    engine.write_bytes(b"plan")
    from marsedge.io import sha256_file

    info = {"tensorrt": HERE.tensorrt, "gpu": HERE.gpu, "compute_capability": HERE.compute_capability,
            "precision": "int8", "dla_core": None, "onnx": onnx.name, "onnx_sha256": sha256_file(onnx)}
    info.update(overrides)
    sidecar_path(engine).write_text(json.dumps(info))
    return onnx, engine


def test_engine_names():
    assert engine_path("m/student.onnx", "fp16").name == "student.fp16.engine"
    assert engine_path("student.int8.onnx", "int8").name == "student.int8.engine"
    assert engine_path("student.int8.onnx", "int8", dla_core=0).name == "student.int8.dla0.engine"
    assert sidecar_path("a/student.fp16.engine").name == "student.fp16.json"


def test_matching_sidecar_is_accepted(tmp_path):
    _, engine = _engine_with_sidecar(tmp_path)
    assert check_sidecar(engine, HERE) == []


def test_foreign_engine_lists_every_difference(tmp_path):
    _, engine = _engine_with_sidecar(tmp_path, tensorrt="8.6.2", gpu="Xavier", compute_capability="7.2")
    problems = check_sidecar(engine, HERE)
    assert len(problems) == 3
    assert "tensorrt '8.6.2'" in problems[0] and "'10.3.0'" in problems[0]
    assert "Xavier" in problems[1] and "7.2" in problems[2]


def test_changed_onnx_makes_the_engine_stale(tmp_path):
    onnx, engine = _engine_with_sidecar(tmp_path)
    onnx.write_bytes(b"onnx-v2, re-quantized")
    assert check_sidecar(engine, HERE) == [f"{onnx.name} changed since the engine was built (sha256 differs)"]
    hint = rebuild_hint(engine)
    assert f"marsedge build {tmp_path / onnx.name} --precision int8" in hint and "--rebuild-stale" in hint


def test_engine_without_or_with_broken_sidecar(tmp_path):
    _, engine = _engine_with_sidecar(tmp_path)
    sidecar_path(engine).write_text("{not json")
    assert "not valid JSON" in check_sidecar(engine, HERE)[0]
    sidecar_path(engine).unlink()
    assert "unknown origin" in check_sidecar(engine, HERE)[0]


@pytest.mark.parametrize("field, literal", [("gain", "NaN"), ("gain", "1e999"), ("height", "-Infinity")])
def test_a_sidecar_with_a_non_finite_preprocessing_number_is_refused_naming_file_and_key(tmp_path, field,
                                                                                        literal):
    """As for ONNX metadata: Python's JSON reads NaN, Infinity and 1e999 as numbers, and a NaN
    height passes every `<= 0` check; the engine's sidecar, written by hand here, is scanned alike."""
    _, engine = _engine_with_sidecar(tmp_path)
    side = sidecar_path(engine)
    numbers = {"height": "64", "width": "64", "channels": "1", "gain": "1.5", field: literal}
    preprocess = ", ".join(f'"{name}": {value}' for name, value in numbers.items())
    table = '[{"id": 0, "name": "soil", "colour": [1, 2, 3]}]'
    metadata = f'{{"class_table": {table}, "preprocess": {{{preprocess}}}}}'
    side.write_text(side.read_text()[:-1] + f', "metadata": {metadata}}}')
    with pytest.raises(ModelError) as refused:
        read_sidecar(engine)
    assert str(refused.value) == f"{side}: sidecar key metadata.preprocess.{field} is not a finite number"
    assert check_sidecar(engine, HERE) == [str(refused.value)]  # edge-run's check names it before any frame


def test_int8_build_needs_a_qdq_model(edge_student, tmp_path):
    onnx = tmp_path / "student.onnx"
    shutil.copy(edge_student[1], onnx)
    facts = inspect_onnx(onnx)
    with pytest.raises(ModelError, match="built from a QDQ model"):
        plan_build(onnx, facts, BuildOptions(precision="int8"), Capabilities.of(fake_trt("10.3.0")))
    # TensorRT 11.0 bindings have no DeviceType.DLA: refused by capability, naming what is missing
    with pytest.raises(ModelError, match="lack DeviceType.DLA"):
        plan_build(onnx, facts, BuildOptions(precision="fp16", dla_core=0),
                   Capabilities.of(fake_trt("11.0.0")))


# ---------------------------------------------------------------- capabilities and the build plan


def test_capabilities_are_read_from_the_enums_not_the_version():
    ten, eleven, eleven_4 = (Capabilities.of(fake_trt(v)) for v in ("10.13.3", "11.0.0", "11.4.1"))
    assert (ten.precision_flags, ten.strongly_typed_flag, ten.dla) == (True, True, True)
    assert (eleven.precision_flags, eleven.dla, eleven.always_strongly_typed) == (False, False, True)
    assert (eleven_4.precision_flags, eleven_4.dla, eleven_4.gpu_fallback) == (False, True, True)


def test_dla_on_tensorrt_11_4_is_strongly_typed_without_precision_flags(tmp_path):
    caps = Capabilities.of(fake_trt("11.4.1"))
    fp32 = tiny_onnx(tmp_path / "m.onnx")
    plan = plan_build(fp32, inspect_onnx(fp32), BuildOptions(precision="fp16", dla_core=1, gpu_fallback=True),
                      caps)
    # FP16 comes from an AutoCast copy of the ONNX, not from BuilderFlag.FP16 (11.x has none)
    assert plan.reduce_to_fp16 and plan.strongly_typed and not (plan.fp16_flag or plan.int8_flag)
    assert (plan.dla_core, plan.gpu_fallback) == (1, True)
    qdq = tiny_onnx(tmp_path / "m.qdq.onnx", "qdq", target="tensorrt")
    plan = plan_build(qdq, inspect_onnx(qdq), BuildOptions(precision="int8", dla_core=0), caps)
    assert plan.strongly_typed and not (plan.reduce_to_fp16 or plan.fp16_flag or plan.int8_flag)
    fp16 = tiny_onnx(tmp_path / "m.fp16.onnx", "fp16")  # already reduced precision: parsed as it is
    assert not plan_build(fp16, inspect_onnx(fp16), BuildOptions(precision="fp16"), caps).reduce_to_fp16
    with pytest.raises(ModelError, match="holds FP16 tensors"):
        plan_build(fp16, inspect_onnx(fp16), BuildOptions(precision="fp32"), caps)


def test_dla_on_tensorrt_10_is_weakly_typed_with_flags(tmp_path):
    caps = Capabilities.of(fake_trt("10.3.0"))
    qdq = tiny_onnx(tmp_path / "m.qdq.onnx", "qdq")
    plan = plan_build(qdq, inspect_onnx(qdq), BuildOptions(precision="int8", dla_core=0), caps)
    assert not plan.strongly_typed and plan.fp16_flag and plan.int8_flag and not plan.reduce_to_fp16
    gpu = plan_build(qdq, inspect_onnx(qdq), BuildOptions(precision="int8"), caps)  # GPU: strongly typed
    assert gpu.strongly_typed and gpu.strongly_typed_flag and not (gpu.fp16_flag or gpu.int8_flag)
    fp32 = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="DLA runs FP16 or INT8 only"):
        plan_build(fp32, inspect_onnx(fp32), BuildOptions(precision="fp32", dla_core=0), caps)
    with pytest.raises(ConfigError, match="--gpu-fallback applies to DLA builds only"):
        plan_build(fp32, inspect_onnx(fp32), BuildOptions(gpu_fallback=True), caps)


class _RecordingConfig:
    """Stands in for an IBuilderConfig: records what apply_dla sets (no engine is involved)."""

    def __init__(self) -> None:
        self.flags: list = []

    def set_flag(self, flag) -> None:
        self.flags.append(flag)


def test_apply_dla_sets_device_core_and_fallback_only():
    trt = fake_trt("11.4.1")
    plan = trt_plan.BuildPlan(reduce_to_fp16=False, strongly_typed=True, strongly_typed_flag=False,
                              fp16_flag=False, int8_flag=False, dla_core=1, gpu_fallback=True)
    config = _RecordingConfig()
    trt_plan.apply_dla(trt, config, plan)
    assert config.default_device_type is trt.DeviceType.DLA and config.DLA_core == 1
    assert config.flags == [trt.BuilderFlag.GPU_FALLBACK]


def test_dynamic_batch_onnx_gets_a_profile(tmp_path):
    from polygraphy.backend.trt import Profile

    dynamic = tiny_onnx(tmp_path / "dyn.onnx", batch="batch")
    facts = inspect_onnx(dynamic)
    assert facts.input_shape == (None, 1, 4, 4)
    shapes = trt_plan.batch_profile(dynamic, facts, BuildOptions(max_batch=16, opt_batch=4))
    assert shapes == ((1, 1, 4, 4), (4, 1, 4, 4), (16, 1, 4, 4))
    profile = Profile().add(facts.input_name, *shapes)  # what build_engine hands CreateConfig
    assert profile["image"].min == (1, 1, 4, 4) and profile["image"].max == (16, 1, 4, 4)
    default = trt_plan.batch_profile(dynamic, facts, BuildOptions())
    assert default == ((1, 1, 4, 4), (1, 1, 4, 4), (8, 1, 4, 4))
    with pytest.raises(ConfigError, match="--opt-batch 9"):
        trt_plan.batch_profile(dynamic, facts, BuildOptions(max_batch=8, opt_batch=9))
    static = tiny_onnx(tmp_path / "static.onnx")
    assert trt_plan.batch_profile(static, inspect_onnx(static), BuildOptions()) is None


@pytest.mark.parametrize("shape, batch", [((-1, 1, 64, 64), None), ((None, 1, 64, 64), None),
                                          (("batch", 1, 64, 64), None), ((1, 1, 64, 64), 1),
                                          ((4, 1, 64, 64), 4)])
def test_dynamic_dimension_from_polygraphy_is_not_a_batch(shape, batch):
    from polygraphy.common import TensorMetadata

    meta = TensorMetadata().add("image", np.float32, shape)
    # Polygraphy reports TensorRT's dynamic dimension as -1: an engine_batch of -1 split forever
    assert static_batch(meta["image"].shape) == batch


def test_tensorrt_version_comes_from_the_module(monkeypatch):
    from importlib import metadata

    from marsedge.bench import environment

    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.13.3.9"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    real_version = metadata.version

    def no_tensorrt_distribution(name: str) -> str:  # pip names it tensorrt_cu12 / tensorrt_cu13
        if name == "tensorrt":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", no_tensorrt_distribution)
    assert environment.library_versions()["tensorrt"] == "10.13.3.9"


# ---------------------------------------------------------------- CPU-target refusal, flags


def test_build_refuses_a_cpu_target_model_before_looking_for_tensorrt(tmp_path, capsys):
    qop = tiny_onnx(tmp_path / "m.int8.onnx", "qoperator", target="cpu")
    with pytest.raises(ModelError, match=r"ONNX Runtime on the CPU \(QOperator nodes QLinearConv\)"):
        build_engine(qop, BuildOptions(precision="int8"))
    cpu_qdq = tiny_onnx(tmp_path / "q.int8.onnx", "qdq", target="cpu")  # QDQ layout, but for the CPU
    with pytest.raises(ModelError, match="quantization.target is 'cpu'"):
        build_engine(cpu_qdq, BuildOptions(precision="int8"))
    assert cli_main(["build", str(qop), "--int8"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--target tensorrt" in err and str(qop) in err


def test_trtexec_spellings_are_aliases():
    from marsedge.cli import build_parser

    args = build_parser().parse_args(["build", "m.onnx", "--int8", "--useDLACore", "1", "--allowGPUFallback",
                                      "--saveEngine", "x.engine", "--timingCacheFile", "t.cache",
                                      "--memPoolSize", "workspace:2G"])
    options = trt_plan.options_from_args(args)
    assert (options.precision, options.dla_core, options.gpu_fallback) == ("int8", 1, True)
    assert options.workspace_mib == 2048 and str(options.timing_cache) == "t.cache" and args.out == "x.engine"
    args = build_parser().parse_args(["build", "m.onnx", "--fp16", "--workspace", "512M"])
    assert (trt_plan.options_from_args(args).precision, trt_plan.options_from_args(args).workspace_mib) == (
        "fp16", 512)
    default = trt_plan.options_from_args(build_parser().parse_args(["build", "m.onnx"]))
    assert (default.precision, default.workspace_mib, default.max_batch) == ("fp16", 1024, 8)
    with pytest.raises(ConfigError, match="contradicts --int8"):
        trt_plan.options_from_args(build_parser().parse_args(["build", "m.onnx", "--precision", "fp32",
                                                              "--int8"]))


@pytest.mark.parametrize("text, mib", [("1024", 1024), ("512M", 512), ("1G", 1024), ("1.5GiB", 1536),
                                       ("2048k", 2), ("1T", 1024 * 1024)])
def test_sizes_take_units(text, mib):
    assert trt_plan.parse_size_mib(text) == mib


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "1X"])
def test_bad_sizes_name_the_flag(text):
    with pytest.raises(ConfigError, match="--workspace"):
        trt_plan.parse_size_mib(text)
    with pytest.raises(ConfigError, match="--memPoolSize"):
        trt_plan.parse_mem_pool(f"dlaSRAM:{text}")


# ---------------------------------------------------------------- the sidecar record


def test_sidecar_is_one_typed_record(tmp_path):
    _, engine = _engine_with_sidecar(tmp_path, max_batch=8, metadata={"class_table": []})
    info = read_sidecar(engine)
    assert (info.precision, info.dla_core, info.max_batch, info.strongly_typed) == ("int8", None, 8, True)
    assert info.platform == HERE and info.onnx_path(engine) == tmp_path / "student.int8.onnx"
    write_sidecar(engine, info)
    assert read_sidecar(engine) == info


@pytest.mark.parametrize("change, message", [
    ({"precision": "int4"}, "precision 'int4'"),
    ({"dla_core": "0"}, "'dla_core' should be a non-negative integer"),
    ({"gpu": 3}, "'gpu' should be str"),
    ({"onnx_sha256": None}, "'onnx_sha256' should be str"),
])
def test_malformed_sidecar_is_one_line_naming_the_file(tmp_path, change, message):
    _, engine = _engine_with_sidecar(tmp_path, **change)
    with pytest.raises(ModelError, match=message) as err:
        read_sidecar(engine)
    assert str(sidecar_path(engine)) in str(err.value) and "\n" not in str(err.value)
    problems = check_sidecar(engine, HERE)  # the backend's check lists the same one line
    assert len(problems) == 1 and str(sidecar_path(engine)) in problems[0]


def test_sidecar_missing_keys_or_not_an_object(tmp_path):
    _, engine = _engine_with_sidecar(tmp_path)
    info = json.loads(sidecar_path(engine).read_text())
    del info["onnx_sha256"], info["gpu"]
    sidecar_path(engine).write_text(json.dumps(info))
    with pytest.raises(ModelError, match="sidecar lacks gpu, onnx_sha256"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("[1, 2]")
    assert "not a JSON object" in check_sidecar(engine, HERE)[0]
    assert "marsedge build MODEL.onnx" in rebuild_hint(engine)


def _tensorrt_and_gpu() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed"
    try:
        cuda_device()
    except ModelError as exc:
        return str(exc)
    return None


@pytest.mark.tensorrt
@pytest.mark.skipif(_tensorrt_and_gpu() is not None, reason=str(_tensorrt_and_gpu()))
def test_build_and_run_fp32_engine_matches_onnxruntime(edge_student, tmp_path):
    from marsedge.runtimes.choice import open_backend

    onnx = tmp_path / "student.onnx"
    shutil.copy(edge_student[1], onnx)
    engine = build_engine(onnx, BuildOptions(precision="fp32"))
    info = json.loads(sidecar_path(engine).read_text())
    assert info["precision"] == "fp32" and info["input_shape"] == [1, 1, 64, 64]
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    ref = open_backend(onnx).infer(x)
    out = open_backend(engine).infer(x)
    np.testing.assert_allclose(out, ref, atol=1e-3)
    onnx.write_bytes(onnx.read_bytes() + b" ")  # the ONNX changes: the engine is now stale
    with pytest.raises(ModelError, match="changed since the engine was built"):
        open_backend(engine)
