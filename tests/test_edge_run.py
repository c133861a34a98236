"""edge-run: outputs, faults, signals, names that try to escape the output folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from marsedge.data.frames import read_frame
from marsedge.data.preprocess import preprocess
from marsedge.edge.pipeline import Frame
from marsedge.edge.run import main
from marsedge.edge.sinks import Writer
from marsedge.runtimes.choice import open_backend
from marsedge.terrain import class_table


@pytest.fixture()
def frames_dir(tiny_ai4mars, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for path in sorted((tiny_ai4mars / "msl/images/edr").iterdir())[:5]:
        shutil.copy(path, folder / path.name)
    good = sorted(folder.iterdir())[0]
    (folder / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    cv2.imwrite(str(folder / "sliver.png"), np.zeros((8, 400), np.uint8))  # wrong size
    return folder


def test_folder_with_broken_frames(edge_student, frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main([str(frames_dir), str(out), "--model", str(edge_student[1]), "--threads", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_ok"] == 5 and summary["frames_failed"] == 4
    assert sorted(f["name"] for f in summary["failures"]) == ["corrupt.jpg", "empty.png", "sliver.png",
                                                               "truncated.jpg"]
    assert summary["backend"]["name"] == "onnxruntime" and summary["fps"] > 0
    assert set(summary["latency_ms"]) == {"mean", "p50", "p90", "p99"}
    assert summary["model_metadata"]["preprocess"]["height"] == 64
    lines = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == 9
    ok = [r for r in lines if "error" not in r]
    assert set(ok[0]["ms"]) == {"decode", "preprocess", "infer", "postprocess", "encode", "write"}
    assert {"big_rock", "sand", "flags", "hazard"} <= set(ok[0]["hazards"])
    assert sum(ok[0]["classes"].values()) == pytest.approx(1.0, abs=1e-3)
    assert len(list((out / "masks").iterdir())) == 5 and len(list((out / "overlays").iterdir())) == 5
    # one log line per bad frame
    err = capsys.readouterr().err
    assert err.count("failed ") == 4 and "skipped " not in err  # summary.json: frames_failed


def test_masks_are_the_models_argmax_at_frame_size(edge_student, frames_dir, tmp_path):
    out = tmp_path / "out"
    main([str(frames_dir / "*.JPG"), str(out), "--model", str(edge_student[1]), "--visualize", "mask"])
    assert not (out / "overlays").exists()
    frame_path = sorted(frames_dir.glob("*.JPG"))[0]
    image = read_frame(frame_path)
    backend = open_backend(edge_student[1])
    expected = backend.infer(preprocess(image, backend.spec)[None])[0].argmax(0).astype(np.uint8)
    expected = cv2.resize(expected, image.shape[::-1][:2], interpolation=cv2.INTER_NEAREST)
    written = cv2.imread(str(out / "masks" / f"{frame_path.name}.png"), cv2.IMREAD_UNCHANGED)  # ext. kept
    assert written.shape == image.shape[:2]
    np.testing.assert_array_equal(written, expected)


def test_every_frame_failing_or_bad_setup_exits_non_zero(edge_student, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"garbage")
    assert main([str(bad), str(tmp_path / "o1"), "--model", str(edge_student[1])]) == 1
    assert json.loads((tmp_path / "o1" / "summary.json").read_text())["frames_failed"] == 1
    assert main([str(bad), str(tmp_path / "o2"), "--model", str(tmp_path / "nope.onnx")]) == 1
    assert "edge-run: error:" in capsys.readouterr().err.splitlines()[-1]
    assert main([str(tmp_path / "missing_dir"), str(tmp_path / "o3"), "--model", str(edge_student[1])]) == 1


def test_frame_names_never_escape_the_output_folder(tmp_path):
    writer = Writer(tmp_path / "out", {"mask", "overlay"}, 0.5, class_table())
    frame = Frame(0, "../../escape.png", image=np.zeros((20, 20), np.uint8),
                  mask=np.zeros((20, 20), np.uint8))
    writer.write(frame)
    assert writer.ok == 1
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert written and all(str(p).startswith("out/") for p in written)
    assert not (tmp_path.parent / "escape.png").exists()


def test_sigterm_finishes_flushes_and_writes_the_summary(edge_student, frames_dir, tmp_path):
    for p in frames_dir.iterdir():  # only good frames: the run loops until signalled
        if not p.name.endswith(".JPG"):
            p.unlink()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "marsedge.edge.run", str(frames_dir), str(out), "--model",
           str(edge_student[1]), "--loop", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    jsonl = out / "frames.jsonl"
    while time.time() < deadline and (not jsonl.exists() or len(jsonl.read_text().splitlines()) < 8):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["frames_ok"] >= 8
    lines = jsonl.read_text().splitlines()
    assert len(lines) == summary["frames_ok"]  # every finished frame was flushed, no partial line
    assert all(json.loads(line)["name"] for line in lines)


def test_stage_stats_stay_bounded_and_keep_the_mean():
    from marsedge.edge.pipeline import StageStats

    stats = StageStats(size=100)
    values = np.random.default_rng(1).exponential(10.0, 5000)
    for v in values:
        stats.add(float(v))
    assert stats.sample.size == 100 and stats.count == 5000
    s = stats.summary()
    assert s["mean"] == pytest.approx(values.mean(), abs=1e-3)  # exact (rounded to 3 decimals)
    assert s["p50"] == pytest.approx(np.median(values), rel=0.35)  # a uniform sample of 100
    exact = StageStats(size=100)
    for v in values[:50]:
        exact.add(float(v))
    assert exact.summary()["p90"] == pytest.approx(np.percentile(values[:50], 90), abs=1e-3)
