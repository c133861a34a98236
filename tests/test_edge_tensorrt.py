"""TensorRT engines: names, sidecars, stale/foreign refusal (no TensorRT needed), and a real build
where TensorRT and a GPU exist."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from marsedge.edge import tensorrt as trt_mod
from marsedge.edge.tensorrt import Platform, check_sidecar, engine_path, rebuild_hint, sidecar_path
from marsedge.errors import ModelError

HERE = Platform(tensorrt="10.3.0", gpu="Orin", compute_capability="8.7")


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


def test_int8_build_needs_a_qdq_model(edge_student, tmp_path):
    onnx = tmp_path / "student.onnx"
    shutil.copy(edge_student[1], onnx)
    with pytest.raises(ModelError, match="built from a QDQ model"):
        trt_mod._network_source(onnx, trt_mod.BuildOptions(precision="int8"), trt_major=10)
    with pytest.raises(ModelError, match="DLA engines need TensorRT 10"):
        trt_mod._network_source(onnx, trt_mod.BuildOptions(precision="fp16", dla_core=0), trt_major=11)


def _tensorrt_and_gpu() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed"
    try:
        trt_mod.cuda_device()
    except ModelError as exc:
        return str(exc)
    return None


@pytest.mark.tensorrt
@pytest.mark.skipif(_tensorrt_and_gpu() is not None, reason=str(_tensorrt_and_gpu()))
def test_build_and_run_fp32_engine_matches_onnxruntime(edge_student, tmp_path):
    from marsedge.edge.backends import open_backend

    onnx = tmp_path / "student.onnx"
    shutil.copy(edge_student[1], onnx)
    engine = trt_mod.build_engine(onnx, trt_mod.BuildOptions(precision="fp32"))
    info = json.loads(sidecar_path(engine).read_text())
    assert info["precision"] == "fp32" and info["input_shape"] == [1, 1, 64, 64]
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    ref = open_backend(onnx).infer(x)
    out = open_backend(engine).infer(x)
    np.testing.assert_allclose(out, ref, atol=1e-3)
    onnx.write_bytes(onnx.read_bytes() + b" ")  # the ONNX changes: the engine is now stale
    with pytest.raises(ModelError, match="changed since the engine was built"):
        open_backend(engine)
