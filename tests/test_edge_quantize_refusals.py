"""What quantize refuses, each in one line before any long work: its output is never its input and
an existing output is replaced only with --overwrite (export too); a model whose outputs are not
finite is named with the calibration frame; calibration frames that are all unreadable are one
error, not a warning each; a negative --tolerance fails at parsing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from marsedge.cli import main


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_the_output_is_never_the_input_nor_replaced_unasked(edge_student, tiny_ai4mars, tmp_path, capsys):
    src = tmp_path / "s.onnx"
    shutil.copy(edge_student[1], src)
    before = src.read_bytes()
    calib = ["--calib", str(tiny_ai4mars)]
    assert main(["quantize", str(src), *calib, "-o", str(src)]) == 2
    assert "the quantized model is the input itself" in one_line(capsys)
    assert main(["quantize", str(src), *calib, "-o", str(tmp_path / "." / "s.onnx")]) == 2
    one_line(capsys)
    assert src.read_bytes() == before
    existing = tmp_path / "s.int8.onnx"  # the default output name
    existing.write_bytes(b"an earlier result")
    assert main(["quantize", str(src), *calib]) == 2
    assert f"{existing}: the quantized model exists; pass --overwrite" in one_line(capsys)
    # --overwrite lifts that refusal (here the next check, an empty calibration folder, stops it)
    (tmp_path / "empty").mkdir()
    assert main(["quantize", str(src), "--calib", str(tmp_path / "empty"), "--eval", str(tiny_ai4mars),
                 "--overwrite"]) != 0
    assert "exists" not in one_line(capsys) and existing.read_bytes() == b"an earlier result"

    assert main(["export", str(edge_student[0]), "-o", str(src)]) == 2
    assert f"{src}: the ONNX model exists; pass --overwrite" in one_line(capsys)
    assert main(["export", str(edge_student[0]), "-o", str(edge_student[0])]) == 2
    assert "the ONNX model is the input itself" in one_line(capsys)


def test_a_negative_tolerance_fails_at_parsing(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path), "--tolerance", "-5"])
    assert caught.value.code == 2 and "--tolerance: must be a finite number >= 0" in capsys.readouterr().err


def test_non_finite_model_outputs_are_refused_naming_the_frame(edge_student, tiny_ai4mars, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(edge_student[1]))
    first = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # a conv's weights
    first.CopyFrom(numpy_helper.from_array(np.full(tuple(first.dims), np.nan, np.float32), first.name))
    src = tmp_path / "nan.onnx"
    onnx.save(model, str(src))
    code = main(["quantize", str(src), "--calib", str(tiny_ai4mars), "--n", "8", "--min-frames", "4",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "AssertionError" not in err
    last = err.strip().splitlines()[-1]
    assert "outputs are not finite (NaN or Inf) on calibration frame" in last and str(tiny_ai4mars) in last
    assert not (tmp_path / "nan.int8.onnx").exists()


def test_calibration_frames_that_are_all_broken_are_one_error(edge_student, tiny_ai4mars, tmp_path, capsys):
    calib = tmp_path / "broken"
    calib.mkdir()
    for i in range(40):
        (calib / f"NLA_{i:03d}.JPG").write_bytes(b"not a jpeg")
    code = main(["quantize", str(edge_student[1]), "--calib", str(calib), "--eval", str(tiny_ai4mars),
                 "-o", str(tmp_path / "q.onnx"), "--min-frames", "4", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "calibration frame skipped" not in err
    assert "none of the 40 calibration frames could be read (first: " in err.strip().splitlines()[-1]
