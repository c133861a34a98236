"""bench and report own what they write: never into the dataset, never over a file given as -o or
over an input, never beside a live writer, never over a finished screenshot unasked."""

from __future__ import annotations

import pytest
from bench_support import confusion, results_file, results_row

from marsedge.bench import results as R
from marsedge.cli import main
from marsedge.errors import ConfigError
from marsedge.ownership import OutputLock


@pytest.fixture
def results_json(tmp_path):
    return R.save_results(tmp_path / "run" / "results.json",
                          results_file([results_row("student.onnx", 10.0, confusion(0.7, 2), seed=2)]))


def test_a_file_as_the_output_folder_is_one_config_error(tmp_path):
    model = tmp_path / "student.onnx"
    model.write_bytes(b"model")
    with pytest.raises(ConfigError, match="student.onnx: the output is a file, not a folder"):
        OutputLock(model).acquire()
    assert model.read_bytes() == b"model"


def test_bench_never_writes_into_its_dataset(tmp_path, capsys):
    data = tmp_path / "ai4mars"
    data.mkdir()
    assert main(["bench", str(tmp_path / "m.onnx"), "--data", str(data), "-o", str(data / ".")]) == 2
    assert "the bench output is the input itself" in capsys.readouterr().err
    assert list(data.iterdir()) == []  # not even a lock file


def test_report_refuses_a_screenshot_over_its_input_or_an_earlier_one(results_json, tmp_path, capsys):
    out = tmp_path / "report"
    before = results_json.read_bytes()
    assert main(["report", str(results_json), "-o", str(out), "--screenshot", str(results_json)]) == 2
    assert "the screenshot is the input itself" in capsys.readouterr().err
    assert results_json.read_bytes() == before and not out.exists()
    shot = tmp_path / "shot.png"
    shot.write_bytes(b"an earlier screenshot")
    assert main(["report", str(results_json), "-o", str(out), "--screenshot", str(shot)]) == 2
    assert f"{shot}: screenshot exists; pass --overwrite" in capsys.readouterr().err
    assert shot.read_bytes() == b"an earlier screenshot" and not (out / "report.md").exists()


def test_report_waits_for_no_live_writer_of_its_folder(results_json, tmp_path, capsys):
    out = tmp_path / "bench"
    with OutputLock(out, "bench"):  # a bench still writing there
        assert main(["report", str(results_json), "-o", str(out)]) == 1
    assert "in use by a running command (bench pid" in capsys.readouterr().err
    assert not (out / "report.md").exists()
    assert main(["report", str(results_json), "-o", str(out)]) == 0
