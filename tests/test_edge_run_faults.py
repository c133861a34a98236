"""edge-run fault classes: foreign decoder errors, full and read-only disks, planted symlinks,
OUTPUT that is a file, a malformed engine sidecar, --alpha on segnet's scale, --debug."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from edge_run_support import copy_frames, mount_tmpfs, png_declaring, unmount

from marsedge.data import frames
from marsedge.edge.pipeline import Frame
from marsedge.edge.run import main
from marsedge.edge.sinks import SinkError, Writer
from marsedge.terrain import class_table


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _lines(out):
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


@pytest.mark.timeout(120)
def test_reader_raising_foreign_exceptions_mid_folder_fails_only_those_frames(
        edge_student, tiny_ai4mars, tmp_path, monkeypatch):
    paths = copy_frames(tiny_ai4mars, tmp_path / "in", 5)
    (tmp_path / "in" / "bomb.png").write_bytes(png_declaring(40000, 40000))  # OpenCV refuses it its own way
    real = frames.read_frame
    faults = {paths[1].name: ValueError("decoder exploded"), paths[2].name: MemoryError(),
              paths[3].name: PermissionError(13, "Permission denied")}

    def flaky(path, *args, **kwargs):  # a reader that lets its decoder's own exceptions out
        if path.name in faults:
            raise faults[path.name]
        return real(path, *args, **kwargs)

    monkeypatch.setattr(frames, "read_frame", flaky)
    out = tmp_path / "out"
    assert main([str(tmp_path / "in"), str(out), "--model", str(edge_student[1]), "--threads", "1"]) == 0
    summary = _summary(out)
    assert (summary["frames_ok"], summary["frames_failed"], summary["frames_seen"]) == (2, 4, 6)
    reasons = {f["name"]: f["reason"] for f in summary["failures"]}
    assert reasons[paths[1].name] == "ValueError: decoder exploded"
    assert reasons[paths[2].name].startswith("MemoryError")
    assert "Permission denied" in reasons[paths[3].name] and "bomb.png" in reasons
    assert [r["name"] for r in _lines(out) if "error" not in r] == [paths[0].name, paths[4].name]


@pytest.fixture()
def tmpfs(tmp_path):
    folder = tmp_path / "tmpfs"
    yield folder
    unmount(folder)


@pytest.mark.timeout(120)
def test_full_disk_stops_promptly_with_one_line_and_a_summary(edge_student, tiny_ai4mars, tmp_path, tmpfs,
                                                              capsys):
    mount_tmpfs(tmpfs, "256k")
    copy_frames(tiny_ai4mars, tmp_path / "in", 4)
    out = tmpfs / "out"
    rc = main([str(tmp_path / "in"), str(out), "--model", str(edge_student[1]), "--threads", "1",
               "--loop", "--max-frames", "2000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3, err
    assert err[-1].startswith("edge-run: error: cannot write ") and "No space left on device" in err[-1]
    summary = _summary(out)
    assert summary["status"] == "stopped" and summary["exit_code"] == 3
    assert "No space left on device" in summary["reason"]
    lines = _lines(out)  # every line whole: a failed append is cut back, never left torn
    assert 0 < len(lines) == summary["frames_ok"] < 2000
    assert all((out / r["mask"]).is_file() and (out / r["overlay"]).is_file() for r in lines)


@pytest.mark.timeout(120)
def test_read_only_output_is_one_line_exit_3(edge_student, tiny_ai4mars, tmp_path, tmpfs, capsys):
    mount_tmpfs(tmpfs, "256k", readonly=True)
    copy_frames(tiny_ai4mars, tmp_path / "in", 1)
    rc = main([str(tmp_path / "in"), str(tmpfs / "out"), "--model", str(edge_student[1])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3
    assert err == [f"edge-run: error: cannot write {tmpfs / 'out'}: Read-only file system"]


def test_symlink_planted_in_output_is_refused_and_nothing_leaves_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.png").write_bytes(b"keep me")
    out = tmp_path / "out"
    writer = Writer(out, {"mask"}, 0.5, class_table())
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "a.png.png").symlink_to(outside / "precious.png")  # the file itself
    frame = Frame(0, "a.png", image=np.zeros((20, 20), np.uint8), mask=np.zeros((20, 20), np.uint8))
    with pytest.raises(SinkError, match="symbolic link"):
        writer.write(frame)
    (out / "masks" / "a.png.png").unlink()
    (out / "masks").rmdir()
    (out / "masks").symlink_to(outside)  # a folder on the way
    with pytest.raises(SinkError, match="symbolic link"):
        writer.write(frame)
    assert sorted(p.name for p in outside.iterdir()) == ["precious.png"]
    assert (outside / "precious.png").read_bytes() == b"keep me"


@pytest.mark.timeout(120)
def test_planted_symlink_stops_the_run_with_exit_3(edge_student, tiny_ai4mars, tmp_path, capsys):
    copy_frames(tiny_ai4mars, tmp_path / "in", 3)
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "overlays").symlink_to(outside)
    rc = main([str(tmp_path / "in"), str(out), "--model", str(edge_student[1]), "--overwrite"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and "is a symbolic link; refusing to write through it" in err[-1]
    assert list(outside.iterdir()) == []
    assert _summary(out)["exit_code"] == 3


def test_output_that_is_a_file_and_debug(edge_student, tiny_ai4mars, tmp_path, capsys):
    copy_frames(tiny_ai4mars, tmp_path / "in", 1)
    target = tmp_path / "out.txt"
    target.write_text("not a folder")
    assert main([str(tmp_path / "in"), str(target), "--model", str(edge_student[1])]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"edge-run: error: OUTPUT {target} is a file, not a folder"]
    assert main([str(tmp_path / "in"), str(target), "--model", str(edge_student[1]), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert target.read_text() == "not a folder"


def test_malformed_engine_sidecar_is_one_line(tmp_path, monkeypatch, capsys):
    from marsedge.runtimes.tensorrt import runner as tensorrt

    monkeypatch.setattr(tensorrt, "current_platform",
                        lambda: tensorrt.Platform(tensorrt="10.0", gpu="Orin", compute_capability="8.7"))
    engine = tmp_path / "student.fp16.engine"
    engine.write_bytes(b"\0" * 64)
    engine.with_suffix(".json").write_text("[1, 2, 3]")  # valid JSON, not a sidecar
    cv2.imwrite(str(tmp_path / "f.png"), np.zeros((64, 64), np.uint8))
    rc = main([str(tmp_path / "f.png"), str(tmp_path / "out"), "--model", str(engine)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith(f"edge-run: error: {engine}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, expected", [("150", "--alpha 0.59"), ("-0.1", "outside 0..1"),
                                             ("nan", "outside 0..1"), ("half", "not a number")])
def test_alpha_outside_0_1_is_refused_with_the_segnet_conversion(value, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), str(tmp_path / "out"), "--model", "m.onnx", "--alpha", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "--alpha" in err[0] and expected in err[0]


def test_alpha_in_range_and_input_loop_alias():
    from marsedge.edge.run import build_parser

    args = build_parser().parse_args(["in", "out", "--model", "m.onnx", "--alpha", "0.59", "--input-loop"])
    assert args.alpha == pytest.approx(0.59) and args.loop is True
