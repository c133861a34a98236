"""edge-run on untrusted models, inputs and configs: NaN/Inf logits and metadata, symlink loops under
a glob, a truncated video, an absurd stream count, a degenerate hazard corridor, FIFOs and devices
as INPUT, out-of-range options, file names that are not UTF-8."""

from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np
import onnx
import pytest
from edge_run_support import copy_frames

from marsedge.data import frames
from marsedge.edge.run import main


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _lines(out):
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def _last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def _edited_student(onnx_path, path, bias=None, preprocess=None):
    """The exported student with its classifier bias set to `bias` (NaN, Inf) and/or its
    marsedge.preprocess metadata replaced by the JSON text `preprocess`."""
    model = onnx.load(str(onnx_path))
    if bias is not None:
        init = next(i for i in model.graph.initializer if i.name == "head.classifier.bias")
        values = np.full_like(onnx.numpy_helper.to_array(init), bias)
        init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    if preprocess is not None:
        next(p for p in model.metadata_props if p.key == "marsedge.preprocess").value = preprocess
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------------- non-finite models


@pytest.mark.parametrize("bias", [np.nan, np.inf])
def test_non_finite_logits_are_failed_frames_never_no_hazard(edge_student, tiny_ai4mars, tmp_path, capsys,
                                                             bias):
    copy_frames(tiny_ai4mars, tmp_path / "in", 3)
    model = _edited_student(edge_student[1], tmp_path / "nan.onnx", bias=bias)
    out = tmp_path / "out"
    assert main([str(tmp_path / "in"), str(out), "--model", str(model), "--threads", "1"]) == 1
    records = _lines(out)
    assert len(records) == 3
    assert all("hazards" not in r and "non-finite logits" in r["error"] for r in records)
    summary = _summary(out)
    assert (summary["frames_ok"], summary["frames_failed"]) == (0, 3)
    assert "0 frames ok, 3 failed" in capsys.readouterr().out


def test_a_model_giving_nan_frame_after_frame_stops_the_run(edge_student, tiny_ai4mars, tmp_path, capsys):
    copy_frames(tiny_ai4mars, tmp_path / "in", 8)
    model = _edited_student(edge_student[1], tmp_path / "nan.onnx", bias=np.nan)
    out = tmp_path / "out"
    assert main([str(tmp_path / "in"), str(out), "--model", str(model), "--threads", "1",
                 "--streams", "1"]) == 4
    assert _last_line(capsys).startswith("edge-run: error: the model failed on 5 frames in a row, last: "
                                         "inference failed: the model gave non-finite logits")
    assert _summary(out)["status"] == "stopped"


def test_scoring_a_model_that_gives_nan_is_refused_naming_the_frame(edge_student, tiny_ai4mars, tmp_path):
    """bench and the quantization gate score through `predict`: garbage is no score of 0.9."""
    from marsedge.data.ai4mars import AI4MarsDataset
    from marsedge.edge.predict import score
    from marsedge.errors import ModelError
    from marsedge.runtimes.choice import open_backend

    backend = open_backend(_edited_student(edge_student[1], tmp_path / "nan.onnx", bias=np.nan), threads=1)
    first = AI4MarsDataset(tiny_ai4mars, "gold-min1")[0]
    with pytest.raises(ModelError, match=f"^frame {first.name}: the model gave non-finite logits"):
        score(backend, [first])


@pytest.mark.parametrize("text, key", [('"gain": NaN', "gain"), ('"gain": 1e999', "gain"),
                                       ('"percentile_low": -Infinity', "percentile_low")])
def test_non_finite_metadata_is_refused_at_model_load_naming_the_key(edge_student, tiny_ai4mars, tmp_path,
                                                                     capsys, text, key):
    spec = dict(json.loads(next(p.value for p in onnx.load(str(edge_student[1])).metadata_props
                                if p.key == "marsedge.preprocess")))
    spec.pop(key)
    preprocess = json.dumps(spec)[:-1] + ", " + text + "}"
    model = _edited_student(edge_student[1], tmp_path / "bad.onnx", preprocess=preprocess)
    copy_frames(tiny_ai4mars, tmp_path / "in", 1)
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model)]) == 1
    assert _last_line(capsys) == (f"edge-run: error: {model}: metadata marsedge.preprocess.{key} "
                                  "is not a finite number")
    assert not (tmp_path / "out").exists()  # refused before OUTPUT was made


@pytest.mark.parametrize("edit, reason", [
    ({"gain": -1.0}, "preprocess.gain must be positive (and finite), got -1.0"),
    ({"channels": 2}, "preprocess.channels must be 1 or 3, got 2"),
    ({"stretch": True}, "unknown preprocess key(s): ['stretch']"),
    ({"height": None}, None),  # a TypeError inside the spec: still one line naming the file
])
def test_a_bad_preprocessing_spec_is_refused_naming_the_model_file(edge_student, tiny_ai4mars, tmp_path,
                                                                   capsys, edit, reason):
    spec = dict(json.loads(next(p.value for p in onnx.load(str(edge_student[1])).metadata_props
                                if p.key == "marsedge.preprocess")))
    model = _edited_student(edge_student[1], tmp_path / "bad.onnx", preprocess=json.dumps({**spec, **edit}))
    copy_frames(tiny_ai4mars, tmp_path / "in", 1)
    # exit 1: the model file's fault, not a usage error (2)
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model)]) == 1
    line = _last_line(capsys)
    assert line.startswith(f"edge-run: error: {model}: metadata marsedge.preprocess: ")
    assert reason is None or line.endswith(reason)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("gain", [float("nan"), float("inf")])
def test_a_non_finite_gain_is_refused_by_the_spec_itself(gain):
    """The spec guards checkpoints and engine sidecars too, whose metadata is not ONNX's JSON."""
    from marsedge.data.preprocess import PreprocessSpec
    from marsedge.errors import ConfigError

    with pytest.raises(ConfigError, match="preprocess.gain must be positive"):
        PreprocessSpec(64, 64, gain=gain)


# --------------------------------------------------------------------------------------- inputs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("links", [{"b": "."}, {"a": "..", "b": "."}])
def test_a_glob_through_symlink_loops_reads_each_real_file_once(edge_student, tiny_ai4mars, tmp_path, links):
    d = tmp_path / "d"
    copy_frames(tiny_ai4mars, d, 2)
    copy_frames(tiny_ai4mars, d / "sol2", 1)
    for name, target in links.items():
        os.symlink(target, d / name)
    out = tmp_path / "out"
    assert main([f"{d}/**/*.JPG", str(out), "--model", str(edge_student[1]), "--threads", "1",
                 "--backend-probe", "0"]) == 0
    names = [r["name"] for r in _lines(out)]
    real = sorted(p.relative_to(d).as_posix() for p in d.rglob("*.JPG") if not p.parent.is_symlink())
    assert names == real and len(real) == 3
    skipped = {s["path"]: s["reason"] for s in _summary(out)["skipped_inputs"]}
    assert sorted(skipped) == sorted(str(d / name) for name in links)
    assert all("not followed" in why for why in skipped.values())


def _truncated_video(path, frames_declared=40, keep=0.45):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    rng = np.random.default_rng(0)
    for _ in range(frames_declared):
        writer.write(rng.integers(0, 255, (64, 64, 3), np.uint8))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])  # a copy cut short: its header still says 40
    return path


def test_a_truncated_video_ends_incomplete_naming_the_file_and_the_frames_read(edge_student, tmp_path,
                                                                              capsys):
    video = _truncated_video(tmp_path / "drive.avi")
    out = tmp_path / "out"
    assert main([str(video), str(out), "--model", str(edge_student[1]), "--threads", "1",
                 "--backend-probe", "0"]) == 1
    summary = _summary(out)
    read = summary["frames_ok"]
    assert 0 < read < 40 and summary["status"] == "incomplete"
    assert summary["reason"] == f"{video} ended early: {read} of the 40 frames its header declares were read"
    assert _last_line(capsys).startswith(f"edge-run: error: {video} ended early: {read} of the 40 frames")
    assert _lines(out)[-1]["error"] == summary["reason"]


@pytest.mark.timeout(120)
def test_in_pipeline_inference_rate_is_never_more_than_the_streams_really_overlapped(
        edge_student, tiny_ai4mars, tmp_path, monkeypatch):
    """A slow source keeps one frame in flight at a time: whatever --streams says, inference inside
    the run cannot go faster than one call after another (the old measure multiplied by 8)."""
    copy_frames(tiny_ai4mars, tmp_path / "in", 5)
    real = frames.read_frame

    def slow_card(path, *args, **kwargs):
        time.sleep(0.15)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(frames, "read_frame", slow_card)
    out = tmp_path / "out"
    assert main([str(tmp_path / "in"), str(out), "--model", str(edge_student[1]), "--streams", "8",
                 "--backend-probe", "0"]) == 0
    summary = _summary(out)
    one_after_another = 1000 / summary["stages_ms"]["infer"]["mean"]
    assert summary["backend"]["streams"] == 8
    assert 0 < summary["backend_fps_in_pipeline"] <= 1.25 * one_after_another


# ------------------------------------------------------------------------------- hazard corridor


@pytest.mark.parametrize("yaml_text, key", [("top_width: 0\nbottom_width: 0\n", "hazards.top_width"),
                                            ("hazards:\n  bottom_width: 0.0\n", "hazards.bottom_width"),
                                            ("top: 0.8\nbottom: 0.8\n", "hazards.top")])
def test_a_degenerate_corridor_is_refused_at_config_load(edge_student, tiny_ai4mars, tmp_path, capsys,
                                                         yaml_text, key):
    (tmp_path / "h.yaml").write_text(yaml_text)
    copy_frames(tiny_ai4mars, tmp_path / "in", 1)
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(edge_student[1]),
                 "--hazards", str(tmp_path / "h.yaml")]) == 2
    assert _last_line(capsys).startswith(f"edge-run: error: {key} ")


# ------------------------------------------------------------------------ INPUT, options, names


def test_a_fifo_or_a_device_as_input_is_named_for_what_it_is(edge_student, tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe")
    for path, kind in ((tmp_path / "pipe", "a FIFO"), ("/dev/zero", "a character device")):
        assert main([str(path), str(tmp_path / "out"), "--model", str(edge_student[1])]) == 1
        assert _last_line(capsys) == (f"edge-run: error: {path} is {kind}, not a frame file, folder, "
                                      "glob or video")


@pytest.mark.parametrize("option", [["--max-frames", "0"], ["--backend-probe", "-5"],
                                    ["--backend-probe", "nan"], ["--queue", "0"], ["--threads", "-1"]])
def test_out_of_range_options_are_usage_errors(edge_student, tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), str(tmp_path / "out"), "--model", str(edge_student[1]), *option])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edge-run: error: argument {option[0]}")


def test_names_that_are_not_utf8_are_written_as_valid_utf8_json_and_resume(edge_student, tiny_ai4mars,
                                                                           tmp_path):
    src = copy_frames(tiny_ai4mars, tmp_path / "in", 2)
    folder = os.fsencode(tmp_path / "in")
    os.rename(src[0], os.path.join(folder, b"sol\xff\xfe.JPG"))
    with open(os.path.join(folder, b"broken\xfe.JPG"), "wb") as f:  # its error message quotes the path
        f.write(b"not a JPEG")
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), str(out), "--model", str(edge_student[1]), "--threads", "1",
            "--backend-probe", "0"]
    assert main(args) == 0
    for name in ("frames.jsonl", "summary.json", "run.json"):
        text = (out / name).read_bytes().decode("utf-8")  # strict: raises on anything but UTF-8
        assert "\\ud" not in text.lower()  # no lone surrogates escaped into the JSON either
    records = {r["name"]: r for r in _lines(out)}
    record = records["sol\\xff\\xfe.JPG"]
    assert bytes.fromhex(record["name_hex"]) == b"sol\xff\xfe.JPG"
    assert record["mask"].isascii() and (out / record["mask"]).is_file()
    assert "broken\\xfe.JPG" in records["broken\\xfe.JPG"]["error"]
    assert main([*args, "--resume"]) == 0
    summary = _summary(out)
    assert (summary["frames_resumed"], summary["frames_failed"], len(_lines(out))) == (2, 1, 3)
