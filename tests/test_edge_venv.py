"""edge-run on a rover-like Python: a fresh venv with only numpy, OpenCV, ONNX Runtime and PyYAML;
and one with OpenVINO in place of ONNX Runtime (no onnx, no ONNX Runtime: `--backend openvino`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROVER_PACKAGES = ["numpy", "opencv-python-headless", "onnxruntime", "pyyaml"]
OPENVINO_ROVER_PACKAGES = ["numpy", "opencv-python-headless", "openvino", "pyyaml"]  # ~12 s to install


def _venv(tmp_path_factory, name: str, packages: list[str]) -> Path:
    """A fresh venv (no system site-packages) with `packages` and marsedge (--no-deps).
    The test's own pip installs into it (`pip --python`), which spares the slow ensurepip step."""
    venv = tmp_path_factory.mktemp(name) / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q"]
    install = subprocess.run([*pip, *packages], capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        pytest.skip(f"pip cannot install {packages} here (offline?): {install.stderr.strip()[-300:]}")
    editable = subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], capture_output=True, text=True,
                              timeout=300)
    assert editable.returncode == 0, editable.stderr[-500:]
    return py


@pytest.fixture(scope="session")
def rover_venv(tmp_path_factory) -> Path:
    return _venv(tmp_path_factory, "rover", ROVER_PACKAGES)


def _frames(tiny_ai4mars: Path, folder: Path) -> Path:
    folder.mkdir()
    for p in sorted((tiny_ai4mars / "msl/images/edr").iterdir())[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    return folder


@pytest.mark.slow
def test_edge_run_without_torch(rover_venv, edge_student, tiny_ai4mars, tmp_path):
    py = rover_venv
    no_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    modules = "marsedge.edge.run, marsedge.runtimes.choice, marsedge.edge.hazards, " \
              "marsedge.runtimes.tensorrt.runner, " \
              "marsedge.deploy.quantize, marsedge.deploy.cli, marsedge.edge.onnx_meta"
    imports = subprocess.run([str(py), "-c", f"import {modules}"], capture_output=True, text=True)
    assert imports.returncode == 0, imports.stderr
    frames = _frames(tiny_ai4mars, tmp_path / "frames")
    edge_run = py.parent / "edge-run"
    run = subprocess.run([str(edge_run), str(frames), str(tmp_path / "out"), "--model", str(edge_student[1]),
                          "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["frames_ok"], summary["frames_failed"]) == (3, 1)
    assert len(list((tmp_path / "out" / "masks").iterdir())) == 3


@pytest.mark.slow
def test_edge_run_on_openvino_without_onnx_runtime(tmp_path_factory, edge_student, tiny_ai4mars, tmp_path):
    py = _venv(tmp_path_factory, "rover_openvino", OPENVINO_ROVER_PACKAGES)
    missing = subprocess.run([str(py), "-c", "import onnxruntime"], capture_output=True, text=True)
    assert missing.returncode != 0  # the model's description comes from OpenVINO, not ORT or onnx
    frames = _frames(tiny_ai4mars, tmp_path / "frames")
    run = subprocess.run([str(py.parent / "edge-run"), str(frames), str(tmp_path / "out"), "--model",
                          str(edge_student[1]), "--backend", "openvino", "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["frames_ok"], summary["frames_failed"]) == (3, 1)
    assert "openvino" in run.stdout + run.stderr
    # a model whose metadata names OpenVINO (quantize's choice) runs there unasked: the choice is read
    # from the file without onnx or ONNX Runtime
    import onnx

    from marsedge.edge.onnx_meta import RUNTIME, set_props

    model = onnx.load(str(edge_student[1]))
    set_props(model, {RUNTIME: "openvino"})
    onnx.save(model, str(tmp_path / "chosen.onnx"))
    run = subprocess.run([str(py.parent / "edge-run"), str(frames), str(tmp_path / "out2"), "--model",
                          str(tmp_path / "chosen.onnx"), "--threads", "1"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["backend"]["name"] == "openvino"
