"""INT8 quantization: real calibration frames only, disjoint from the gate's split, gated on accuracy."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from marsedge.edge.backends import OnnxBackend
from marsedge.edge.quantize import (
    CalibrationSet,
    GateError,
    QuantizeOptions,
    calibration_set,
    check_disjoint,
    quantize_model,
)
from marsedge.errors import ConfigError, DataError


def test_too_few_calibration_frames_are_refused_and_few_warned(tiny_ai4mars):
    with pytest.raises(DataError, match="16 calibration frames, at least 32"):
        calibration_set(str(tiny_ai4mars), n=500, min_frames=32)
    with pytest.warns(UserWarning, match="500\\+ recommended"):
        calib = calibration_set(str(tiny_ai4mars), n=10, min_frames=8)
    assert len(calib.paths) == 10 and all(p.suffix == ".JPG" for p in calib.paths)
    with pytest.warns(UserWarning):
        again = calibration_set(str(tiny_ai4mars), n=10, min_frames=8)
    assert again.paths == calib.paths  # seeded: the same frames every time


def test_calibration_runs_in_strides_that_divide_the_set():
    from marsedge.edge.quantize import calibration_stride

    assert [calibration_stride(n) for n in (36, 37, 500, 3)] == [4, 1, 4, 3]


def test_calibration_overlapping_the_eval_split_is_refused(tmp_path):
    def frame(name: str, content: bytes):
        (tmp_path / name).write_bytes(content)
        return tmp_path / name

    gold = [frame("NLA_3.JPG", b"gold three"), frame("NLA_2.JPG", b"gold two")]
    calib = CalibrationSet("x", [frame("NLA_1.JPG", b"one"), frame("NLA_5.JPG", b"five")], ["NLA_1", "NLA_5"])
    check_disjoint(calib, gold)
    same_name = CalibrationSet("x", calib.paths, ["NLA_1", "NLA_2"])
    with pytest.raises(DataError, match="1 calibration frame.*NLA_2"):
        check_disjoint(same_name, gold)
    renamed_copy = frame("copy.JPG", b"gold three")
    with pytest.raises(DataError, match="copy \\(same content as NLA_3\\)"):
        check_disjoint(CalibrationSet("x", [renamed_copy], ["copy"]), gold)


def test_gold_split_as_calibration_is_refused(edge_student, tiny_ai4mars, tmp_path):
    options = QuantizeOptions(n=100, min_frames=4)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="in the evaluation split"):
        quantize_model(edge_student[1], str(tiny_ai4mars), tmp_path / "q.onnx", None, options,
                       calib_split="gold-min1", eval_split="gold-min1")


def test_gate_needs_labels(edge_student, tiny_ai4mars, tmp_path):
    with pytest.raises(ConfigError, match="--eval"):
        quantize_model(edge_student[1], str(tiny_ai4mars / "msl/images/edr"), tmp_path / "q.onnx", None,
                       QuantizeOptions(min_frames=4))


@pytest.fixture(scope="module")
def quantized(edge_student, tiny_ai4mars, tmp_path_factory):
    src = tmp_path_factory.mktemp("q") / "student.onnx"
    shutil.copy(edge_student[1], src)
    options = QuantizeOptions(target="cpu", method="max", n=16, min_frames=8, threads=1)
    with pytest.warns(UserWarning):
        out, record = quantize_model(src, str(tiny_ai4mars), None, None, options)
    return src, out, record


def test_cpu_int8_model_records_its_gate(quantized):
    src, out, record = quantized
    assert out.name == "student.int8.onnx"
    backend = OnnxBackend(out)
    meta = backend.metadata["quantization"]
    assert backend.precision == "int8" and meta == json.loads(json.dumps(record))
    assert meta["format"] == "QOperator" and meta["calibration"]["frames"] == 16
    gate = meta["gate"]
    assert "gold-min1, 6 frames" in gate["eval"] and set(gate["iou_drop"]) >= {"soil", "sand"}
    assert gate["miou_drop"] == pytest.approx(gate["miou_fp32"] - gate["miou_int8"], abs=1e-2)
    assert 0.0 <= gate["pixel_agreement"] <= 1.0 and gate["passed"] == (gate["miou_drop"] <= 1.0)
    assert meta["latency"]["fp32_ms"] > 0 and meta["latency"]["int8_ms"] > 0
    # the INT8 graph really is integer arithmetic, and keeps the preprocessing spec of its source
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QLinearConv" in ops
    assert backend.spec == OnnxBackend(src).spec


def test_int8_outputs_track_fp32(quantized):
    src, out, _ = quantized
    x = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(1, 1, 64, 64)
    fp32, int8 = OnnxBackend(src).infer(x), OnnxBackend(out).infer(x)
    scale = np.abs(fp32).max()
    assert np.abs(fp32 - int8).max() < 0.25 * scale


def test_failed_gate_writes_nothing_unless_forced(quantized, tiny_ai4mars, tmp_path):
    src = quantized[0]
    strict = QuantizeOptions(method="max", n=8, min_frames=8, tolerance=-100.0)  # impossible to meet
    with pytest.warns(UserWarning), pytest.raises(GateError, match="not written"):
        quantize_model(src, str(tiny_ai4mars), tmp_path / "a.onnx", None, strict)
    assert not (tmp_path / "a.onnx").exists()
    strict.force = True
    with pytest.warns(UserWarning):
        out, record = quantize_model(src, str(tiny_ai4mars), tmp_path / "b.onnx", None, strict)
    assert out.exists() and record["gate"]["passed"] is False
    # auto tried the fast layout, then the one with the first and classifier convs in FP32, and
    # (both failing) kept the latter
    assert [t["recipe"] for t in record["tried"]] == ["qop-u8s8-all", "qop-u8s8"]
    assert record["recipe"] == "qop-u8s8" and len(record["excluded_nodes"]) == 2


def test_auto_recipe_keeps_the_fastest_layout_that_passes(quantized, tiny_ai4mars, tmp_path):
    import onnx

    lenient = QuantizeOptions(method="max", n=8, min_frames=8, tolerance=100.0)
    with pytest.warns(UserWarning):
        out, record = quantize_model(quantized[0], str(tiny_ai4mars), tmp_path / "c.onnx", None, lenient)
    assert record["recipe"] == "qop-u8s8-all" and [t["recipe"] for t in record["tried"]] == ["qop-u8s8-all"]
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Conv" not in ops and "QLinearConv" in ops  # every conv integer, the first and last too


def test_unknown_recipe_fails_before_calibration(quantized, tiny_ai4mars, tmp_path):
    with pytest.raises(ConfigError, match="--recipe must be auto or one of"):
        quantize_model(quantized[0], str(tiny_ai4mars), tmp_path / "d.onnx", None,
                       QuantizeOptions(min_frames=4, recipe="qop-fast"))


def test_quantizing_twice_is_refused(quantized, tiny_ai4mars):
    from marsedge.errors import ModelError

    with pytest.raises(ModelError, match="already quantized"):
        quantize_model(quantized[1], str(tiny_ai4mars), None, None, QuantizeOptions(min_frames=4))


@pytest.mark.slow
def test_tensorrt_target_writes_an_explicit_qdq_model(edge_student, tiny_ai4mars, tmp_path):
    import onnx

    src = tmp_path / "student.onnx"
    shutil.copy(edge_student[1], src)
    from onnxruntime.quantization.calibrate import HistogramCollector, MinMaxCalibrater
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ort_own = (MinMaxCalibrater.compute_data, HistogramCollector.collect_value, dict(QLinearOpsRegistry),
               dict(QDQRegistry))
    assert "Concat" in QLinearOpsRegistry  # modelopt deletes it (and more) from ORT's registries
    options = QuantizeOptions(target="tensorrt", method="max", n=8, min_frames=8, threads=1)
    with pytest.warns(UserWarning):
        out, record = quantize_model(src, str(tiny_ai4mars), None, None, options)
    # modelopt patches these for the whole process; they must be ORT's own again afterwards
    assert (MinMaxCalibrater.compute_data, HistogramCollector.collect_value, dict(QLinearOpsRegistry),
            dict(QDQRegistry)) == ort_own
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert "QLinearConv" not in ops  # explicit QDQ for TensorRT, not ONNX Runtime's operators
    assert record["tool"] == "nvidia-modelopt" and record["gate"]["eval"].startswith(str(tiny_ai4mars))
    backend = OnnxBackend(out)  # metadata survived modelopt
    assert backend.precision == "int8" and backend.spec.size == (64, 64)


def test_a_corrupt_calibration_frame_is_named_and_skipped(quantized, tiny_ai4mars, tmp_path):
    from marsedge.data.ai4mars import list_items

    calib = tmp_path / "calib"
    calib.mkdir()
    for item in list_items(tiny_ai4mars, "train")[:8]:
        shutil.copy(item.image, calib / item.image.name)
    (calib / "NLA_broken.JPG").write_bytes(b"not a jpeg at all")
    options = QuantizeOptions(method="max", n=100, min_frames=8, recipe="qop-u8s8", force=True)
    with pytest.warns(UserWarning, match="calibration frame skipped: .*NLA_broken.JPG"):
        out, record = quantize_model(quantized[0], str(calib), tmp_path / "e.onnx", str(tiny_ai4mars),
                                     options)
    skipped = record["calibration"]["skipped"]
    assert out.exists() and record["calibration"]["frames"] == 8
    assert len(skipped) == 1 and "NLA_broken.JPG" in skipped[0]
