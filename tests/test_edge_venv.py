"""edge-run on a rover-like Python: a fresh venv with only numpy, OpenCV, ONNX Runtime and PyYAML."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROVER_PACKAGES = ["numpy", "opencv-python-headless", "onnxruntime", "pyyaml"]


@pytest.fixture(scope="session")
def rover_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with the rover packages and marsedge (--no-deps).
    The test's own pip installs into it (`pip --python`), which spares the slow ensurepip step."""
    venv = tmp_path_factory.mktemp("rover") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q"]
    install = subprocess.run([*pip, *ROVER_PACKAGES], capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        pytest.skip(f"pip cannot install {ROVER_PACKAGES} here (offline?): {install.stderr.strip()[-300:]}")
    editable = subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], capture_output=True, text=True,
                              timeout=300)
    assert editable.returncode == 0, editable.stderr[-500:]
    return py


@pytest.mark.slow
def test_edge_run_without_torch(rover_venv, edge_student, tiny_ai4mars, tmp_path):
    py = rover_venv
    no_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    modules = "marsedge.edge.run, marsedge.edge.backends, marsedge.edge.hazards, marsedge.edge.tensorrt, " \
              "marsedge.edge.quantize, marsedge.edge.cli, marsedge.edge.onnx_meta"
    imports = subprocess.run([str(py), "-c", f"import {modules}"], capture_output=True, text=True)
    assert imports.returncode == 0, imports.stderr
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted((tiny_ai4mars / "msl/images/edr").iterdir())[:3]:
        shutil.copy(p, frames / p.name)
    (frames / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    edge_run = py.parent / "edge-run"
    run = subprocess.run([str(edge_run), str(frames), str(tmp_path / "out"), "--model", str(edge_student[1]),
                          "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["frames_ok"], summary["frames_failed"]) == (3, 1)
    assert len(list((tmp_path / "out" / "masks").iterdir())) == 3
