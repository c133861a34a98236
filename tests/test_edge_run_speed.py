"""edge-run at its backend's speed: the cheaper writer gives the same outputs, the
postprocessing leaves the inference thread, and summary.json says which FPS is which."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
from edge_run_support import copy_frames

from marsedge.edge import pipeline
from marsedge.edge.predict import argmax_ids
from marsedge.edge.run import main
from marsedge.edge.sinks import Writer
from marsedge.terrain import class_table, palette


def _run(edge_student, inp, out, *extra):
    return main([str(inp), str(out), "--model", str(edge_student[1]), "--threads", "1", *extra])


def _lines(out):
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("shape", [(1, 6, 64, 48), (3, 4, 7, 5), (1, 2, 1, 9), (2, 5, 300, 7)])  # 300: bands
def test_argmax_ids_is_numpys_argmax_with_ties_and_non_finite_values(shape):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape, dtype=np.float32)
    tied = np.round(logits)  # many equal maxima: the first one wins, as in numpy
    for x in (logits, tied, np.ascontiguousarray(logits.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)):
        got = argmax_ids(x)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, np.argmax(x, axis=1))
    for bad in (np.inf, -np.inf, np.nan):
        x = logits.copy()
        x[0, -1, 0, 0] = x[0, 0, -1, -1] = bad
        x[0, 0, 0, -1] = x[0, 1, 0, -1] = np.inf  # two infinities tie
        np.testing.assert_array_equal(argmax_ids(x), np.argmax(x, axis=1))


@pytest.mark.parametrize("alpha", [0.0, 0.35, 0.5, 1.0])
def test_overlay_is_the_addweighted_blend_byte_for_byte(alpha, tmp_path):
    rng = np.random.default_rng(1)
    table = class_table()
    writer = Writer(tmp_path, {"overlay"}, alpha, table)
    rgb_lut = palette(table)
    mask = rng.integers(0, len(table), (40, 56), dtype=np.uint8)
    for shape in ((40, 56), (40, 56, 3)):  # NAVCAM grey (per-channel LUT blend), colour (addWeighted)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        before = cv2.cvtColor(cv2.addWeighted(rgb, 1 - alpha, rgb_lut[mask], alpha, 0), cv2.COLOR_RGB2BGR)
        np.testing.assert_array_equal(writer.overlay(image, mask), before)


@pytest.mark.timeout(120)
def test_summary_reports_end_to_end_and_unloaded_backend_fps(edge_student, tiny_ai4mars, tmp_path, capsys,
                                                             monkeypatch):
    threads = set()
    original = pipeline.logits_to_mask

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "logits_to_mask", spy)
    copy_frames(tiny_ai4mars, tmp_path / "in", 3)
    out = tmp_path / "out"
    assert _run(edge_student, tmp_path / "in", out, "--backend-probe", "0.2") == 0
    assert threads == {"edge-run writer"}  # the inference thread only infers
    assert cv2.getNumThreads() == 1  # --cv-threads 1: the cores are the runtime's
    s = json.loads((out / "summary.json").read_text())
    assert s["backend_probe"]["calls"] >= 3 and s["backend_probe"]["seconds"] >= 0.2
    assert s["backend_fps"] == s["backend_probe"]["fps"] > 0
    assert s["backend_fps_in_pipeline"] > 0 and s["fps"] > 0
    assert s["fps_vs_backend"] == pytest.approx(s["fps"] / s["backend_fps"], abs=1e-3)
    line = capsys.readouterr().out.splitlines()[0]
    assert "FPS end-to-end = " in line and "of the backend alone" in line and "measured unloaded" in line
    assert "inference inside the pipeline" in line

    assert _run(edge_student, tmp_path / "in", tmp_path / "o2", "--backend-probe", "0") == 0
    s = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert s["backend_fps"] is None and s["fps_vs_backend"] is None and s["backend_probe"] is None
    assert "backend alone not measured" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_overlay_every_n_and_resume_keeps_the_frames_without_one(edge_student, tiny_ai4mars, tmp_path):
    copy_frames(tiny_ai4mars, tmp_path / "in", 5)
    out = tmp_path / "out"
    assert _run(edge_student, tmp_path / "in", out, "--overlay-every", "2") == 0
    lines = sorted(_lines(out), key=lambda r: r["index"])
    assert [r["overlay"] is not None for r in lines] == [True, False, True, False, True]
    assert all((out / r["mask"]).is_file() for r in lines)
    assert len(list((out / "overlays").iterdir())) == 3
    assert _run(edge_student, tmp_path / "in", out, "--overlay-every", "2", "--resume") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_resumed"] == 5 and summary["overlay_every"] == 2  # nothing redone
    assert len(_lines(out)) == 5


def test_overlay_every_must_be_positive(edge_student, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), str(tmp_path / "o"), "--model", str(edge_student[1]), "--overlay-every", "0"])
    assert stop.value.code == 2
    assert "--overlay-every: 0 must be at least 1" in capsys.readouterr().err
