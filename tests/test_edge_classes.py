"""The model's class table, end to end: a 4-class model benched, gated and run by edge-run; the
6-class model alike; a model lacking a hazard rule's class runs with the rule skipped (or is refused)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from bench_support import BIASES, WEIGHTS, numpy_logits, write_tiny_onnx
from edge_run_support import copy_frames

from marsedge.bench.runner import BenchSettings, bench_model
from marsedge.data.frames import read_frame
from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.edge.gate import accuracy_gate, gate_reference
from marsedge.edge.run import main
from marsedge.terrain import CLASS_NAMES, class_table, palette

SIZE = 32


def _numpy_mask(image: np.ndarray, spec, k: int) -> np.ndarray:
    """What the tiny model's edge-run mask must be: numpy logits, argmax, nearest to the frame."""
    ids = numpy_logits(preprocess(image, spec)[None], WEIGHTS[:k], BIASES[:k])[0].argmax(0).astype(np.uint8)
    return cv2.resize(ids, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)


def _overlay_error(out, line: dict, frame, table: list[dict]) -> float:
    """Median distance of an overlay from the frame blended half and half with `table`'s colours."""
    overlay = cv2.imread(str(out / line["overlay"]))[:, :, ::-1].astype(int)
    mask = cv2.imread(str(out / line["mask"]), cv2.IMREAD_UNCHANGED)
    image = read_frame(frame).astype(int)
    return float(np.median(np.abs(overlay - (image[:, :, None] + palette(table)[mask]) / 2)))


def _edge_run(model, frames, out, *extra) -> tuple[int, dict, list[dict]]:
    rc = main([str(frames), str(out), "--model", str(model), "--threads", "1", *map(str, extra)])
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    lines = [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()] if summary else []
    return rc, summary, lines


@pytest.mark.parametrize("k", [4, 6])
def test_a_k_class_model_runs_through_edge_run_with_its_own_table(k, tiny_ai4mars, tmp_path, capsys):
    model = write_tiny_onnx(tmp_path / f"m{k}.onnx", SIZE, weights=WEIGHTS[:k], biases=BIASES[:k],
                            model_config={"backbone": "tiny-conv", "num_classes": k})
    frames = copy_frames(tiny_ai4mars, tmp_path / "in", 3)
    rc, summary, lines = _edge_run(model, tmp_path / "in", tmp_path / "out")
    assert rc == 0 and summary["frames_ok"] == 3 and "note:" not in capsys.readouterr().err
    assert [c["name"] for c in summary["model_metadata"]["class_table"]] == list(CLASS_NAMES[:k])
    assert summary["hazards"] == {"rules": {"big_rock": {"class": "big rock", "limit": 0.05},
                                            "sand": {"class": "sand", "limit": 0.25}}, "skipped": {}}
    spec = PreprocessSpec.from_dict(summary["model_metadata"]["preprocess"])
    for path, line in zip(frames, lines, strict=True):
        image = read_frame(path)
        mask = cv2.imread(str(tmp_path / "out" / line["mask"]), cv2.IMREAD_UNCHANGED)
        expected = _numpy_mask(image, spec, k)
        assert np.array_equal(mask, expected) and int(mask.max()) < k
        assert list(line["classes"]) == list(CLASS_NAMES[:k])  # fractions by the model's names
        counts = np.bincount(mask.ravel(), minlength=k)
        assert line["classes"]["soil"] == pytest.approx(counts[0] / mask.size, abs=1e-4)
        assert sum(line["classes"].values()) == pytest.approx(1.0, abs=1e-3)
        assert isinstance(line["hazards"]["big_rock"], float) and isinstance(line["hazards"]["sand"], float)


def test_a_four_class_model_benched_gated_and_run_by_edge_run(tiny_ai4mars, tmp_path):
    """A 4-class model: rover and background are not the model's classes anywhere on the way."""
    model = write_tiny_onnx(tmp_path / "four.onnx", SIZE, weights=WEIGHTS[:4], biases=BIASES[:4],
                            model_config={"backbone": "tiny-conv", "num_classes": 4})
    settings = BenchSettings(data=str(tiny_ai4mars), split="gold-min1", warmup=0, iters=2, duration=None,
                             threads=1)
    row = bench_model(str(model), "four", settings, str(tmp_path / "four.npz"))
    assert row["status"] == "ok" and row["accuracy"]["class_names"] == list(CLASS_NAMES[:4])
    reference = gate_reference(model, str(tiny_ai4mars), "gold-min1", threads=1)
    gate = accuracy_gate(reference, model, 1.0, threads=1)
    assert gate["passed"] and set(gate["iou_drop"]) == set(CLASS_NAMES[:4])
    assert gate["miou_fp32"] == pytest.approx(row["accuracy"]["metrics"]["miou"], abs=1e-5)
    copy_frames(tiny_ai4mars, tmp_path / "in", 2)
    rc, summary, lines = _edge_run(model, tmp_path / "in", tmp_path / "out")
    assert rc == 0 and summary["frames_ok"] == 2 and summary["hazards"]["skipped"] == {}
    assert all(set(line["classes"]) == set(CLASS_NAMES[:4]) for line in lines)


def _three_class_model(tmp_path):
    """A model of its own 3-class table with no sand (ids 0..2: soil, big rock, sky)."""
    onnx = pytest.importorskip("onnx")
    from marsedge.edge.onnx_meta import CLASS_TABLE, set_props

    path = write_tiny_onnx(tmp_path / "three.onnx", SIZE, weights=WEIGHTS[:3], biases=BIASES[:3],
                           model_config={"backbone": "tiny-conv", "num_classes": 3})
    model = onnx.load(str(path))
    table = [{"id": i, "name": n, "colour": [40 * i, 80, 200 - 40 * i]}
             for i, n in enumerate(("soil", "big rock", "sky"))]
    set_props(model, {CLASS_TABLE: json.dumps(table)})
    onnx.save(model, str(path))
    return path


def test_a_hazard_rule_the_model_cannot_judge_is_skipped_once_or_refused(tiny_ai4mars, tmp_path, capsys):
    model = _three_class_model(tmp_path)
    frames = copy_frames(tiny_ai4mars, tmp_path / "in", 3)
    rc, summary, lines = _edge_run(model, tmp_path / "in", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 0 and summary["frames_ok"] == 3
    assert err.count("edge-run: note: hazard rule sand skipped: the model has no class 'sand'") == 1
    assert summary["hazards"]["skipped"] == {"sand": "sand"}
    assert list(summary["hazards"]["rules"]) == ["big_rock"]
    for line in lines:
        assert line["hazards"]["sand"] is None and "sand" not in line["hazards"]["flags"]
        assert list(line["classes"]) == ["soil", "big rock", "sky"]
    table = summary["model_metadata"]["class_table"]  # overlays in the model's colours, not the project's
    assert _overlay_error(tmp_path / "out", lines[0], frames[0], table) <= 3.0
    assert _overlay_error(tmp_path / "out", lines[0], frames[0], class_table()) > 10.0
    strict = tmp_path / "strict.yaml"
    strict.write_text("hazards:\n  missing_class: error\n")
    out = tmp_path / "refused"
    assert main([str(tmp_path / "in"), str(out), "--model", str(model), "--hazards", str(strict)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "edge-run: error: hazards.max_sand: the model has no class 'sand' (its classes: soil, big rock, "
        "sky); set hazards.missing_class: skip to run without this rule"]
    assert not out.exists()
