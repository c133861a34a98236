"""Per-pixel confidence in edge-run: the 8-bit confidence PNG, the per-class means of frames.jsonl and
--min-confidence, each against a softmax computed here by hand from the model's own logits."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from marsedge.data.frames import read_frame
from marsedge.data.preprocess import preprocess
from marsedge.edge.confidence import mask_and_confidence
from marsedge.edge.hazards import HazardRules, class_fractions, load_hazard_config
from marsedge.edge.run import main
from marsedge.errors import FrameError
from marsedge.runtimes.choice import open_backend


@pytest.fixture()
def frames_dir(tiny_ai4mars, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for path in sorted((tiny_ai4mars / "msl/images/edr").iterdir())[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def by_hand(model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(argmax class ids, max softmax probability) at the frame's size, float64 softmax, nearest."""
    backend = open_backend(model, threads=1)
    try:
        logits = backend.infer(preprocess(image, backend.spec)[None])[0].astype(np.float64)
    finally:
        backend.close()
    z = np.exp(logits - logits.max(axis=0))
    probability = z / z.sum(axis=0)
    h, w = image.shape[:2]
    ids = cv2.resize(np.argmax(logits, axis=0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    top = cv2.resize(probability.max(axis=0), (w, h), interpolation=cv2.INTER_NEAREST)
    return ids, top


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def test_confidence_png_and_means_match_a_softmax_by_hand(edge_student, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert main([str(frames_dir), str(out), "--model", str(edge_student[1]), "--threads", "1",
                 "--visualize", "mask,confidence", "--backend-probe", "0"]) == 0
    table = json.loads((out / "summary.json").read_text())["model_metadata"]["class_table"]
    for record in records(out):
        ids, top = by_hand(edge_student[1], read_frame(frames_dir / record["name"]))
        png = cv2.imread(str(out / record["confidence"]), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == ids.shape
        assert np.abs(png.astype(int) - np.round(top * 255).astype(int)).max() <= 1
        assert 1 / len(table) <= top.min() and top.max() <= 1.0
        mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mask, ids)  # no --min-confidence: the plain argmax
        for c in table:
            where = ids == c["id"]
            expected = float(top[where].mean()) if where.any() else None
            assert record["mean_confidence"][c["name"]] == pytest.approx(expected, abs=1e-4)


def test_min_confidence_maps_unsure_pixels_to_unknown(edge_student, frames_dir, tmp_path):
    image = read_frame(sorted(frames_dir.iterdir())[0])
    ids, top = by_hand(edge_student[1], image)
    threshold = float(np.median(top))  # about half the pixels fall below it
    out = tmp_path / "out"
    assert main([str(frames_dir), str(out), "--model", str(edge_student[1]), "--threads", "1",
                 "--visualize", "mask", "--min-confidence", str(threshold), "--backend-probe", "0"]) == 0
    record = records(out)[0]
    mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_UNCHANGED)
    expected = np.where(top < threshold, 255, ids).astype(np.uint8)
    clear = np.abs(top - threshold) > 1e-5  # float32 in the run, float64 here: leave the tie pixels out
    assert np.array_equal(mask[clear], expected[clear])
    assert 0.2 < np.mean(mask == 255) < 0.8
    # the hazard summary counts only the pixels the model is sure of
    table = json.loads((out / "summary.json").read_text())["model_metadata"]["class_table"]
    rules = HazardRules.for_model(load_hazard_config(None), table)
    assert record["hazards"] == rules.assess(mask)
    assert record["classes"] == class_fractions(mask, table)
    assert sum(record["classes"].values()) == pytest.approx(1 - np.mean(mask == 255), abs=1e-3)


def test_the_default_outputs_compute_no_confidence(edge_student, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert main([str(frames_dir), str(out), "--model", str(edge_student[1]), "--threads", "1",
                 "--backend-probe", "0"]) == 0
    assert all("confidence" not in r and "mean_confidence" not in r for r in records(out))
    assert not (out / "confidence").exists()


def test_non_finite_logits_give_no_confidence():
    logits = np.zeros((1, 3, 4, 4), np.float32)
    logits[0, 1, 2, 2] = np.nan
    with pytest.raises(FrameError, match="not finite"):
        mask_and_confidence(logits, (4, 4))


def test_min_confidence_outside_0_1_is_a_usage_error(edge_student, frames_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(frames_dir), str(tmp_path / "out"), "--model", str(edge_student[1]),
              "--min-confidence", "1.5"])
    assert stop.value.code == 2
    assert "--min-confidence: 1.5 is outside 0..1" in capsys.readouterr().err
