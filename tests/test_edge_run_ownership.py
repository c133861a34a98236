"""edge-run owns OUTPUT: one run at a time (a lock held for the run's life), --resume continues only
the same work (run.json: model sha256, INPUT, the options that shape outputs), OUTPUT is never INPUT."""

from __future__ import annotations

import json
import random
import shutil
import time

import onnx
import pytest
from edge_run_support import copy_frames, edge_run_process

from marsedge.edge.run import main
from marsedge.ownership import OutputLock


def _lines(out):
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def _last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def _another_model(onnx_path, folder):
    """The same network, one weight changed: another file content, another sha256."""
    model = onnx.load(str(onnx_path))
    bias = next(i for i in model.graph.initializer if i.name == "head.classifier.bias")
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] += 1.0
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    path = folder / "other.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.timeout(120)
def test_resume_with_another_model_or_output_options_is_refused_naming_what_differs(
        edge_student, tiny_ai4mars, tmp_path, capsys):
    copy_frames(tiny_ai4mars, tmp_path / "in", 4)
    inp, out, model = str(tmp_path / "in"), tmp_path / "out", str(edge_student[1])
    base = [inp, str(out), "--threads", "1", "--backend-probe", "0"]
    assert main([*base, "--model", model, "--max-frames", "2"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model_sha256"] and run["input"] == inp
    assert json.loads((out / "summary.json").read_text())["model_sha256"] == run["model_sha256"]
    before = (out / "frames.jsonl").read_bytes()

    other = _another_model(edge_student[1], tmp_path)
    assert main([*base, "--model", str(other), "--resume"]) == 2
    line = _last_line(capsys)
    assert line.startswith("edge-run: error: --resume: the model differs") and "other.onnx" in line
    assert main([*base, "--model", model, "--resume", "--alpha", "0.3"]) == 2
    assert "--alpha differs" in _last_line(capsys)
    assert (out / "frames.jsonl").read_bytes() == before  # nothing of the earlier run touched

    moved = shutil.copy(model, tmp_path / "moved.onnx")  # the same model under another path, other threads
    assert main([inp, str(out), "--model", str(moved), "--resume", "--threads", "2",
                 "--backend-probe", "0"]) == 0
    assert [r["name"] for r in _lines(out)] == sorted(p.name for p in (tmp_path / "in").iterdir())


def test_resume_without_a_run_record_is_refused(edge_student, tiny_ai4mars, tmp_path, capsys):
    """frames.jsonl with no run.json beside it: nothing tells which model made those frames."""
    copy_frames(tiny_ai4mars, tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "frames.jsonl").write_text(json.dumps({"name": "x.JPG", "mask": "masks/x.JPG.png"}) + "\n")
    assert main([str(tmp_path / "in"), str(out), "--model", str(edge_student[1]), "--resume"]) == 2
    assert "holds frames but no run.json" in _last_line(capsys)


@pytest.mark.timeout(120)
def test_a_run_holding_output_refuses_a_second_run_and_an_overwrite(edge_student, tiny_ai4mars, tmp_path,
                                                                     capsys):
    copy_frames(tiny_ai4mars, tmp_path / "in", 2)
    inp, out, model = str(tmp_path / "in"), tmp_path / "out", str(edge_student[1])
    assert main([inp, str(out), "--model", model, "--threads", "1", "--backend-probe", "0"]) == 0
    kept = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    with OutputLock(out, "a live edge-run"):
        for flag in ("--overwrite", "--resume"):
            assert main([inp, str(out), "--model", model, flag]) == 1
            line = _last_line(capsys)
            assert line.startswith(f"edge-run: error: {out}: in use by a running command (a live edge-run")
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == kept


HELD_AT_FIRST_FRAME = """
import os, time
from marsedge.data import frames
real = frames.read_frame
def held(path, *args, **kwargs):  # the run that holds OUTPUT waits here until every other one has tried
    deadline = time.time() + 120
    while not os.path.exists(GO) and time.time() < deadline:
        time.sleep(0.02)
    return real(path, *args, **kwargs)
frames.read_frame = held
"""


@pytest.mark.timeout(240)
def test_several_runs_started_at_once_on_one_output_exactly_one_runs(edge_student, tiny_ai4mars, tmp_path):
    """Four --resume runs and one --overwrite started at once on one OUTPUT: exactly one holds it
    and runs; each other is refused with one line, exit 1, before it reads or deletes anything;
    frames.jsonl lists every frame once and every file it names exists."""
    copy_frames(tiny_ai4mars, tmp_path / "in", 6)
    out, go = tmp_path / "out", tmp_path / "go"
    flags = ["--resume"] * 4 + ["--overwrite"]
    random.Random(0).shuffle(flags)
    procs = [edge_run_process([tmp_path / "in", out, "--model", edge_student[1], "--threads", "1",
                               "--backend-probe", "0", flag], f"GO = {str(go)!r}\n{HELD_AT_FIRST_FRAME}")
             for flag in flags]
    deadline = time.time() + 180
    while sum(p.poll() is not None for p in procs) < len(procs) - 1 and time.time() < deadline:
        time.sleep(0.05)
    go.touch()
    results = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1, 1, 1, 1], results
    for rc, err in results:
        if rc:
            assert "in use by a running command (edge-run pid" in err.strip().splitlines()[-1], err
    records = _lines(out)
    names = [r["name"] for r in records]
    assert names == sorted(set(names)) == sorted(p.name for p in (tmp_path / "in").iterdir())
    assert all((out / r["mask"]).is_file() and (out / r["overlay"]).is_file() for r in records)
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_output_that_is_input_is_refused_before_anything_is_written(edge_student, tiny_ai4mars, tmp_path,
                                                                    capsys):
    copy_frames(tiny_ai4mars, tmp_path / "in", 2)
    before = sorted(p.name for p in (tmp_path / "in").iterdir())
    for output in (str(tmp_path / "in"), f"{tmp_path}/in/."):
        assert main([str(tmp_path / "in"), output, "--model", str(edge_student[1]), "--overwrite"]) == 2
        assert "the OUTPUT is the input itself" in _last_line(capsys)
    assert main([f"{tmp_path}/in/*.JPG", str(tmp_path / "in"), "--model", str(edge_student[1])]) == 2
    assert "the OUTPUT is the input itself" in _last_line(capsys)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == before
