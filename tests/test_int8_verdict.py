"""The one INT8 verdict (marsedge.edge.verdict): the rule, its use by bench with the tolerance
quantize recorded, and the report's verdict block; the intensity-only baseline it warns against."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bench_support import confusion, results_file, results_row

from marsedge.bench.baseline import intensity_baseline
from marsedge.bench.report import build_blocks, to_markdown
from marsedge.bench.runner import judge_int8
from marsedge.data.ai4mars import Sample
from marsedge.edge.quantize import QuantizeOptions
from marsedge.edge.verdict import Int8Verdict, int8_verdict
from marsedge.errors import ConfigError


def test_the_rule():
    ok = int8_verdict({"miou": 0.30}, {"miou": 0.295}, 0.01, "val")
    assert ok.passed and ok.drop == pytest.approx(0.005)
    assert ok.line() == "INT8 accepted on val: mIoU 0.3000 -> 0.2950 (drop +0.0050 <= tolerance 0.0100)"
    bad = int8_verdict({"miou": 0.30}, {"miou": 0.28}, 0.01, "gold-min3")
    assert not bad.passed and bad.line().startswith("INT8 rejected on gold-min3")
    assert "(drop +0.0200 > tolerance 0.0100)" in bad.line()
    assert int8_verdict({"miou": 0.30}, {"miou": 0.35}, 0.0, "val").passed  # better is never rejected
    assert not int8_verdict({"miou": 0.30}, {"miou": float("nan")}, 1.0, "val").passed  # nor NaN accepted
    assert not int8_verdict({"miou": 0.30}, {}, 1.0, "val").passed
    top1 = int8_verdict({"top1": 0.9, "recall": {}}, {"top1": 0.895}, 0.01, "test")
    assert top1.metric == "top1" and top1.passed and "top-1 0.9000" in top1.line()
    assert Int8Verdict.from_dict(bad.to_dict()) == bad and bad.to_dict()["passed"] is False


def test_a_tolerance_in_points_is_refused():
    with pytest.raises(ConfigError, match=r"--tolerance is a fraction .*got 1.5"):
        QuantizeOptions(tolerance=1.5).validate()
    QuantizeOptions(tolerance=0.02).validate()


def rows_of_a_run() -> list[dict]:
    teacher = results_row("teacher.onnx", 20.0, confusion(0.8), seed=1)
    student = results_row("student.onnx", 5.0, confusion(0.7), seed=2)
    int8 = results_row("student.int8.onnx", 4.0, confusion(0.66), seed=3)
    torch_student = results_row("student.pt", 30.0, confusion(0.7), seed=4)
    teacher.update(model_config={"backbone": "big"}, params=3_000_000)
    for row in (student, int8, torch_student):
        row.update(model_config={"backbone": "small"}, params=600_000)
    torch_student["backend"] = "torch"
    int8["precision"] = "int8"
    # what quantize recorded in the INT8 file: accepted on val, with a tolerance of 0.05
    int8["quantize_verdict"] = int8_verdict({"miou": 0.5}, {"miou": 0.49}, 0.05, "val").to_dict()
    return [torch_student, teacher, student, int8]


def test_bench_judges_int8_by_the_same_rule_with_quantizes_tolerance():
    rows = rows_of_a_run()
    int8 = rows[3]
    verdict = judge_int8(int8, rows, "gold-min3")
    # against the FP32 row of the same model on the same backend (not the PyTorch one), tolerance 0.05
    expected = int8_verdict(rows[2]["accuracy"]["metrics"], int8["accuracy"]["metrics"], 0.05, "gold-min3")
    assert verdict == expected and int8["int8_verdict"]["reference"] == "student.onnx"
    assert int8["int8_verdict"]["quantize"]["split"] == "val"
    assert judge_int8(rows[2], rows, "gold-min3") is None  # an FP32 row is not judged


def test_the_report_opens_with_the_verdict(tmp_path):
    rows = rows_of_a_run()
    judge_int8(rows[3], rows, "gold-min3")
    run = results_file(rows)
    run["dataset"]["intensity_baseline"] = {"miou": 0.52, "pixel_accuracy": 0.75}
    text = to_markdown(build_blocks([run], [tmp_path / "results.json"], tmp_path, {}), tmp_path)
    verdict = text.split("## Verdict", 1)[1].split("\n## ", 1)[0]
    s, t = (r["accuracy"]["metrics"]["miou"] for r in (rows[2], rows[1]))
    assert (f"Student student.onnx keeps {s / t:.2f} of the teacher's mIoU: {s:.4f} against teacher "
            f"teacher.onnx {t:.4f} (0.60 M against 3.00 M parameters).") in verdict
    ratio = rows[1]["latency"]["end_to_end"]["p50"] / rows[2]["latency"]["end_to_end"]["p50"]
    assert f"like for like (onnxruntime fp32, end-to-end p50): {ratio:.2f}x." in verdict
    assert ("student.int8.onnx: quantize: INT8 accepted on val: mIoU 0.5000 -> 0.4900 (drop +0.0100 <= "
            "tolerance 0.0500); the same rule on this split against student.onnx: INT8 ") in verdict
    below = [r["id"] for r in rows if r["accuracy"]["metrics"]["miou"] < 0.52
             or r["accuracy"]["metrics"]["pixel_accuracy"] < 0.75]
    warning = next(line for line in verdict.splitlines() if "WARNING: below the intensity-only" in line)
    assert below and [name for name in (r["id"] for r in rows) if f"{name} (" in warning] == below
    assert text.index("## Verdict") < text.index("## Results")


def test_intensity_baseline_is_the_best_grey_level_lookup():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 3]], np.uint8)
    image = np.array([[10, 10, 50, 50], [90, 90, 0, 90]], np.uint8)  # grey 90 is sand twice, rock once
    base = intensity_baseline([Sample(image, label, "msl", "a")], 6)
    assert base["pixel_accuracy"] == pytest.approx(6 / 7)  # 7 labelled; the big rock one is called sand
    assert math.isfinite(base["miou"]) and base["miou"] < 1
    assert intensity_baseline([Sample(image, 3, "msl", "a")], 6) is None  # a classification sample
