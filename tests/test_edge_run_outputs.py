"""edge-run's OUTPUT: names that cannot collide, skipped inputs, reruns (refused, --resume,
--overwrite), and INPUT URIs as jetson-utils users write them."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from edge_run_support import copy_frames

from marsedge.edge import sources
from marsedge.edge.run import main
from marsedge.edge.sinks import Namer
from marsedge.errors import ConfigError
from marsedge.io import safe_relpath


def _lines(out):
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def _run(edge_student, inp, out, *extra):
    return main([str(inp), str(out), "--model", str(edge_student[1]), "--threads", "1", *extra])


def _tree(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_safe_relpath_keeps_folders_and_extension_and_marks_every_mapping():
    assert safe_relpath("sol1/x.png") == "sol1/x.png"
    assert safe_relpath("x.jpg") != safe_relpath("x.png")
    assert safe_relpath("a b.png") != safe_relpath("a_b.png") == "a_b.png"
    assert safe_relpath("é.png") != safe_relpath("ü.png")
    escaped = safe_relpath("../../etc/passwd")
    assert ".." not in escaped.split("/") and escaped.startswith("etc/passwd~")


def test_namer_resolves_case_clashes_in_input_order_and_is_stable():
    namer = Namer()
    assert namer.stem("X.png") == "X.png"
    assert namer.stem("x.png") == "x.png~2"  # a FAT/exFAT card would merge them
    assert namer.stem("X.png") == "X.png" and namer.stem("x.png") == "x.png~2"


@pytest.mark.timeout(120)
def test_colliding_names_get_distinct_outputs(edge_student, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    names = ["a b.png", "a_b.png", "x.jpg", "x.png", "é.png", "ü.png"]
    for i, name in enumerate(names):
        image = np.full((64, 64), 40 * i, np.uint8)
        image[: 8 * (i + 1)] = 255  # each frame different
        cv2.imencode(os.path.splitext(name)[1], image)[1].tofile(str(inp / name))
    out = tmp_path / "out"
    assert _run(edge_student, inp, out) == 0
    lines = _lines(out)
    assert sorted(r["name"] for r in lines) == sorted(names)
    masks = {r["mask"] for r in lines}
    overlays = {r["overlay"] for r in lines}
    assert len(masks) == len(overlays) == len(names)
    assert all((out / m).is_file() for m in masks | overlays)
    assert len(list((out / "masks").iterdir())) == len(names)
    assert {r["name"]: r["mask"] for r in lines}["x.jpg"] == "masks/x.jpg.png"


@pytest.mark.timeout(120)
def test_skipped_entries_are_listed_in_the_summary(edge_student, tiny_ai4mars, tmp_path):
    inp = tmp_path / "in"
    copy_frames(tiny_ai4mars, inp, 2)
    os.mkfifo(inp / "pipe.png")  # opening it would block forever
    (inp / "loop.png").symlink_to(inp / "loop.png")
    (inp / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    out = tmp_path / "out"
    assert _run(edge_student, inp, out) == 0
    summary = json.loads((out / "summary.json").read_text())
    skipped = {os.path.basename(s["path"]): s["reason"] for s in summary["skipped_inputs"]}
    assert set(skipped) == {"pipe.png", "loop.png", "dangling.jpg"}
    assert "FIFO" in skipped["pipe.png"]
    assert summary["frames_ok"] == 2


@pytest.mark.timeout(120)
def test_rerun_without_flags_is_refused_and_touches_nothing(edge_student, tiny_ai4mars, tmp_path, capsys):
    copy_frames(tiny_ai4mars, tmp_path / "in", 2)
    out = tmp_path / "out"
    assert _run(edge_student, tmp_path / "in", out) == 0
    before = _tree(out)
    capsys.readouterr()
    assert _run(edge_student, tmp_path / "in", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edge-run: error: OUTPUT {out} is not empty: pass --resume to continue the earlier run "
                   "or --overwrite to replace what it wrote"]
    assert _tree(out) == before


def _comparable(out):
    return {r["name"]: {k: v for k, v in r.items() if k not in ("ms", "index")} for r in _lines(out)}


@pytest.mark.timeout(180)
def test_resume_gives_what_one_uninterrupted_run_gives(edge_student, tiny_ai4mars, tmp_path):
    inp = tmp_path / "in"
    copy_frames(tiny_ai4mars, inp, 6)
    (inp / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    whole = tmp_path / "whole"
    assert _run(edge_student, inp, whole) == 0
    part = tmp_path / "part"
    assert _run(edge_student, inp, part, "--max-frames", "4") == 0  # the run a power cut ended
    first = _lines(part)
    (part / first[-1]["mask"]).unlink()  # a frame whose mask did not make it: redone
    with (part / "frames.jsonl").open("a") as f:
        f.write('{"name": "NLA_torn", "ind')  # the torn last line of the power cut
    assert _run(edge_student, inp, part, "--resume") == 0
    assert _comparable(part) == _comparable(whole)
    assert len(_lines(part)) == 7  # one line per input: failures redone, not repeated
    outputs = {k: v for k, v in _tree(whole).items() if k.startswith(("masks/", "overlays/"))}
    resumed = {k: v for k, v in _tree(part).items() if k.startswith(("masks/", "overlays/"))}
    assert resumed.keys() == outputs.keys()
    assert all(resumed[k] == v for k, v in outputs.items() if k.startswith("masks/"))
    summary = json.loads((part / "summary.json").read_text())
    assert (summary["frames_ok"], summary["frames_failed"], summary["frames_resumed"]) == (6, 1, 3)
    assert _run(edge_student, inp, part, "--resume") == 0  # nothing left to do: still fine
    assert len(_lines(part)) == 7  # the failure is tried again, once, and still one line


@pytest.mark.timeout(120)
def test_overwrite_removes_only_what_edge_run_wrote(edge_student, tiny_ai4mars, tmp_path):
    inp = tmp_path / "in"
    paths = copy_frames(tiny_ai4mars, inp, 4)
    out = tmp_path / "out"
    assert _run(edge_student, inp, out) == 0
    (out / "notes.txt").write_text("mine")
    (out / "masks" / "mine.png").write_bytes(b"mine too")
    for p in paths[2:]:
        p.unlink()
    assert _run(edge_student, inp, out, "--overwrite") == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(
        [f"{p.name}.png" for p in paths[:2]] + ["mine.png"])
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "masks" / "mine.png").read_bytes() == b"mine too"
    assert [r["name"] for r in _lines(out)] == [p.name for p in paths[:2]]


@pytest.mark.timeout(120)
def test_file_uri_and_glob_names(edge_student, tiny_ai4mars, tmp_path):
    copy_frames(tiny_ai4mars, tmp_path / "in" / "sol1", 2)
    out = tmp_path / "out"
    assert _run(edge_student, f"file://{tmp_path / 'in'}/*/*.JPG", out) == 0
    assert all(r["name"].startswith("sol1/") and r["mask"].startswith("masks/sol1/") for r in _lines(out))


def test_uri_schemes(monkeypatch):
    assert sources.open_source("v4l2:///dev/video7").resumable is False
    assert sources.open_source("rtsp://10.0.0.2:8554/navcam").resumable is False
    with pytest.raises(ConfigError, match="unknown scheme http://"):
        sources.open_source("http://example.org/x.png")
    with pytest.raises(ConfigError, match="v4l2:///dev/video0"):
        sources.open_source("v4l2://camera")
    monkeypatch.setattr(sources, "has_gstreamer", lambda: False)
    with pytest.raises(ConfigError, match="csi://0: this OpenCV has no GStreamer"):
        sources.open_source("csi://0")
    monkeypatch.setattr(sources, "has_gstreamer", lambda: True)
    assert sources.open_source("csi://1").resumable is False
    assert "sensor-id=1" in sources.csi_pipeline(1)


@pytest.mark.timeout(120)
def test_camera_that_cannot_open_is_one_failure(edge_student, tmp_path):
    assert _run(edge_student, "v4l2:///dev/video57", tmp_path / "out") == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames_failed"] == 1 and "/dev/video57" in summary["failures"][0]["reason"]
