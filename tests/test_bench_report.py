"""The report: Pareto front, run-vs-baseline regressions, failed rows, and the page in a real Chromium."""

from __future__ import annotations

import copy
import re

import pytest
from bench_support import confusion, results_file, results_row

from marsedge.bench import results as R
from marsedge.bench.browser import check_page, find_chromium, screenshot
from marsedge.bench.compare import compare_runs
from marsedge.bench.plots import pareto_front
from marsedge.bench.report import like_for_like, write_report
from marsedge.errors import DataError


def test_pareto_front_keeps_only_undominated_points():
    # (latency, accuracy): b is slower and worse than a; d is slowest but best
    points = [(10.0, 0.60), (12.0, 0.55), (5.0, 0.40), (30.0, 0.70), (10.0, 0.50)]
    assert pareto_front(points) == [2, 0, 3]


@pytest.fixture()
def two_runs():
    baseline = results_file([results_row("teacher.onnx", 40.0, confusion(0.8, 1), seed=1),
                             results_row("student.onnx", 10.0, confusion(0.7, 2), seed=2),
                             results_row("student.int8.onnx", 6.0, confusion(0.68, 3), seed=3)])
    current = copy.deepcopy(baseline)
    # planted regression: the INT8 student got 30 % slower; nothing else moved
    for stage in ("end_to_end", "backend_only"):
        for key in ("mean", "p50", "p90", "p99", "min", "max"):
            current["models"][2]["latency"][stage][key] *= 1.3
    return current, baseline


def test_comparison_marks_the_planted_regression_only(two_runs):
    current, baseline = two_runs
    cmp = compare_runs(current, baseline)
    verdicts = {row["id"]: row["regressions"] for row in cmp["rows"]}
    assert verdicts["teacher.onnx"] == [] and verdicts["student.onnx"] == []
    assert len(verdicts["student.int8.onnx"]) == 1 and "p50" in verdicts["student.int8.onnx"][0]
    assert cmp["regressions"] == 1 and cmp["same_machine"]


def test_comparison_marks_accuracy_and_status_regressions(two_runs):
    current, baseline = two_runs
    current["models"][0]["accuracy"]["metrics"]["miou"] -= 0.05
    current["models"][1] = R.failed_row("student.onnx", "/models/student.onnx", "ModelError: bad file")
    verdicts = {row["id"]: row["regressions"] for row in compare_runs(current, baseline)["rows"]}
    assert any("mIoU" in v for v in verdicts["teacher.onnx"])
    assert verdicts["student.onnx"] == ["status ok -> failed"]


def test_report_with_baseline_marks_regression_in_md_and_html(two_runs, tmp_path):
    current, baseline = two_runs
    paths = []
    for name, results in (("now", current), ("base", baseline)):
        paths.append(R.save_results(tmp_path / name / "results.json", results))
    md, page = write_report([R.load_results(p) for p in paths], paths, tmp_path / "report")
    text = md.read_text()
    regression_lines = [line for line in text.splitlines() if "REGRESSION" in line]
    assert len(regression_lines) == 1 and regression_lines[0].startswith("| student.int8.onnx")
    assert re.search(r'<td class="bad">REGRESSION: p50', page.read_text())
    # every picture the markdown links exists beside it
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (md.parent / link).is_file(), link


def test_failed_row_does_not_stop_the_report(tmp_path):
    rows = [results_row("student.onnx", 10.0, confusion(0.7)),
            R.failed_row("broken.onnx", "/models/broken.onnx", "ModelError: ONNX Runtime cannot load it"),
            results_row("student.int8.onnx", 6.0, confusion(0.65, 4))]
    md, page = write_report([results_file(rows)], [tmp_path / "results.json"], tmp_path)
    text = md.read_text()
    assert "failed: ModelError: ONNX Runtime cannot load it" in text
    assert "| student.int8.onnx |" in text  # the row after the failure is reported too
    assert text.count("![confusion matrix of") == 2  # the failed model has no matrix, the others do
    assert (tmp_path / "confusion-student.int8.onnx.png").is_file()


def test_results_schema_is_checked(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text('{"schema": "marsedge.bench/0", "models": []}')
    with pytest.raises(DataError, match="schema"):
        R.load_results(bad)
    with pytest.raises(DataError, match="not found"):
        R.load_results(tmp_path / "missing.json")


needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="Debian's chromium is not installed (scripts/install_chromium.sh)")


@pytest.mark.browser
@needs_chromium
def test_report_page_loads_and_every_image_renders_in_chromium(two_runs, tmp_path):
    current, baseline = two_runs
    paths = [R.save_results(tmp_path / name / "results.json", results)
             for name, results in (("now", current), ("base", baseline))]
    _, page = write_report([R.load_results(p) for p in paths], paths, tmp_path / "report")
    expected_images = page.read_text().count("<img ")
    check = check_page(page)
    assert check["title"] == "marsedge benchmark report"
    assert check["errors"] == []
    assert len(check["images"]) == expected_images >= 5
    assert all(im["complete"] and im["naturalWidth"] > 0 for im in check["images"]), check["images"]
    png = screenshot(page, tmp_path / "shot.png", height=800)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
@needs_chromium
def test_browser_check_catches_a_broken_image(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>t</title></head><body>'
                    '<img alt="broken" src="data:image/png;base64,AAAAbm90IGEgcG5n"></body></html>')
    check = check_page(page)
    assert check["images"][0]["naturalWidth"] == 0
    assert check["errors"] == ["broken"]


def test_pareto_labels_never_overlap_even_when_points_coincide():
    """An FP32 ONNX model and its INT8 copy often land on the same spot; their labels must not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from marsedge.bench.plots import draw_accuracy_latency

    rows = [results_row(name, 10.0 + 0.01 * i, confusion(0.7, 1), seed=1)
            for i, name in enumerate(["teacher.pt", "teacher.onnx", "student.pt", "student.onnx",
                                      "student.int8.onnx", "student.trt.fp16", "student.trt.int8"])]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = draw_accuracy_latency(ax, rows)
    fig.tight_layout()
    fig.canvas.draw()
    # the text alone (an Annotation's own extent also covers its leader line)
    boxes = [Text.get_window_extent(label) for label in labels]
    assert len(boxes) == len(rows)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "two Pareto labels overlap"
    plt.close(fig)


def test_speedups_compare_like_with_like_only():
    teacher, student = {"backbone": "r18_0.5x_sk0"}, {"backbone": "mnv2_0.35"}
    ort = "onnxruntime"
    spec = [("teacher.pt", 30.0, "torch", "fp32", teacher), ("teacher.onnx", 8.0, ort, "fp32", teacher),
            ("student.pt", 12.0, "torch", "fp32", student), ("student.onnx", 2.0, ort, "fp32", student),
            ("student.int8.onnx", 1.0, ort, "int8", student)]
    rows = []
    for name, ms, backend, precision, cfg in spec:
        row = results_row(name, ms, confusion(0.7, 1), seed=1)
        row.update(backend=backend, precision=precision, model_config=cfg)
        rows.append(row)
    pairs = {(fast, slow): (held, ratio) for fast, slow, held, ratio in like_for_like(rows)}
    assert set(pairs) == {("student.pt", "teacher.pt"), ("student.onnx", "teacher.onnx"),
                          ("student.int8.onnx", "student.onnx")}  # never torch against onnxruntime
    assert pairs[("student.int8.onnx", "student.onnx")][0] == "onnxruntime, same model, int8 vs fp32"
    assert pairs[("student.onnx", "teacher.onnx")][1] == pytest.approx(
        rows[1]["latency"]["end_to_end"]["p50"] / rows[3]["latency"]["end_to_end"]["p50"])
