"""A new runtime is one module and one registry line: a pure-numpy runtime defined here, outside
marsedge, is served by edge-run, `marsedge bench` (its child processes find it through
MARSEDGE_RUNTIMES) and the accuracy gate, with no other module touched; and no module outside a
runtime's package names that runtime."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from bench_support import write_tiny_onnx

from marsedge.bench.runner import BenchSettings, run_bench, split_backend
from marsedge.deploy.gate import accuracy_gate, gate_reference
from marsedge.edge.onnx_meta import read_onnx_metadata
from marsedge.edge.run import main as edge_run
from marsedge.errors import ConfigError
from marsedge.runtimes import PLUGINS_VARIABLE, RUNTIMES, Runtime, backend_names, register_runtime
from marsedge.runtimes.choice import backend_for, open_backend

PLUGIN = "numpy_conv_runtime"
# The whole runtime: a runner over the bench tests' tiny 1x1-conv model, saved as weights + metadata
PLUGIN_SOURCE = '''
import json
from pathlib import Path

import numpy as np

from marsedge.edge.onnx_meta import ModelMetadata
from marsedge.runtimes import Runtime, register_runtime
from marsedge.runtimes.base import BaseBackend


class NumpyConv(BaseBackend):
    name = "numpyconv"

    def __init__(self, path):
        self.path = Path(path)
        with np.load(self.path) as saved:
            self.w, self.b = saved["w"], saved["b"]
            self.model_metadata = ModelMetadata.from_dict(json.loads(str(saved["metadata"])))

    def infer_impl(self, batch):
        return batch * self.w[None, :, None, None] + self.b[None, :, None, None]

    def input_shape(self):
        return [None, self.spec.channels, self.spec.height, self.spec.width]

    def output_shape(self):
        return [None, len(self.w), self.spec.height, self.spec.width]


register_runtime(Runtime("numpyconv", "NumPy", "numpy", lambda path, options: NumpyConv(path),
                         suffixes=(".npconv",)))
'''
SIZE = 32


@pytest.fixture(scope="module")
def numpy_runtime(tmp_path_factory):
    """The plugin module on sys.path and in MARSEDGE_RUNTIMES (for child processes), imported here;
    (the tiny ONNX, the same model saved for the numpy runtime). Unregistered afterwards."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    onnx = write_tiny_onnx(folder / "tiny.onnx", SIZE)
    import onnx as onnx_lib
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in onnx_lib.load(str(onnx)).graph.initializer}
    model = folder / "tiny.npconv"
    with model.open("wb") as f:
        np.savez(f, w=weights["w"].reshape(-1), b=weights["b"],
                 metadata=json.dumps(read_onnx_metadata(onnx).to_dict()))
    patch = pytest.MonkeyPatch()
    patch.syspath_prepend(str(folder))
    patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    patch.setenv(PLUGINS_VARIABLE, PLUGIN)
    __import__(PLUGIN)
    yield onnx, model
    RUNTIMES.pop("numpyconv", None)
    sys.modules.pop(PLUGIN, None)
    patch.undo()


def test_registered_runtime_opens_its_suffix_and_states_its_shapes(numpy_runtime):
    onnx, model = numpy_runtime
    assert "numpyconv" in backend_names() and backend_for(model) == "numpyconv"
    runner = open_backend(model)  # the model check passes on the runner's own shapes
    reference = open_backend(onnx)
    frame = np.random.default_rng(0).random((2, 1, SIZE, SIZE), np.float32)
    assert runner.name == "numpyconv" and runner.input_shape() == [None, 1, SIZE, SIZE]
    np.testing.assert_allclose(runner.infer(frame), reference.infer(frame), rtol=1e-5, atol=1e-5)
    assert split_backend(f"{onnx}@numpyconv") == (str(onnx), "numpyconv")


def test_a_runtime_module_that_cannot_be_imported_is_one_warning():
    env = {**os.environ, PLUGINS_VARIABLE: "no_such_runtime_module"}
    done = subprocess.run([sys.executable, "-c", "import marsedge.runtimes as r; print(sorted(r.RUNTIMES))"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "onnxruntime" in done.stdout
    assert "MARSEDGE_RUNTIMES: cannot import runtime module 'no_such_runtime_module'" in done.stderr


def test_a_name_or_suffix_taken_is_refused(numpy_runtime):
    with pytest.raises(ConfigError, match="registered twice"):
        register_runtime(Runtime("numpyconv", "again", "numpy", RUNTIMES["numpyconv"].open))
    with pytest.raises(ConfigError, match=r"suffix \.onnx already opens with onnxruntime"):
        register_runtime(Runtime("other", "other", "numpy", RUNTIMES["numpyconv"].open, suffixes=(".onnx",)))


def test_edge_run_serves_the_registered_runtime(numpy_runtime, tmp_path):
    onnx, model = numpy_runtime
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), rng.integers(0, 255, (48, 48), np.uint8))
    masks = {}
    for name, path in (("numpy", model), ("onnx", onnx)):
        assert edge_run([str(frames), str(tmp_path / name), "--model", str(path), "--threads", "1"]) == 0
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["frames_ok"] == 3
        masks[name] = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                       for p in sorted((tmp_path / name / "masks").iterdir())}
    assert summary["backend"]["name"] == "onnxruntime"
    assert json.loads((tmp_path / "numpy" / "summary.json").read_text())["backend"]["name"] == "numpyconv"
    assert masks["numpy"].keys() == masks["onnx"].keys()
    assert all(np.array_equal(masks["numpy"][k], masks["onnx"][k]) for k in masks["onnx"])


def test_bench_and_the_gate_serve_the_registered_runtime(numpy_runtime, tiny_ai4mars, tmp_path):
    onnx, model = numpy_runtime
    settings = BenchSettings(data=str(tiny_ai4mars), split="gold-min3", warmup=1, iters=3, duration=None,
                             threads=1, samples=0, timeout=300)
    rows = {r["id"]: r for r in run_bench([str(onnx), str(model)], settings, tmp_path / "bench")["models"]}
    row = rows["tiny.npconv"]
    assert row["status"] == "ok" and row["backend"] == "numpyconv", row.get("reason")
    assert row["accuracy"]["agreement"]["value"] == 1.0  # the same masks as the ONNX file on ONNX Runtime

    reference = gate_reference(onnx, str(tiny_ai4mars), "val", threads=1)  # FP32 on ONNX Runtime
    gate = accuracy_gate(reference, model, 0.01, threads=1, runtime="numpyconv")
    assert gate["passed"] and gate["drop"] == 0 and gate["pixel_agreement"] == 1.0


# Where a runtime's name may appear outside its package: the registry's import list, and ONNX
# Runtime's own TensorrtExecutionProvider. (ONNX Runtime, the default runtime that quantize and
# export verify on, and torch, the training side, are named throughout by design.)
NAMES_ALLOWED = {
    "openvino": ["runtimes/__init__.py"],
    "tensorrt": ["runtimes/__init__.py", "runtimes/onnxruntime/runner.py"],
}


def test_no_module_outside_a_runtimes_package_names_it():
    root = Path(__file__).resolve().parents[1] / "marsedge"
    found = {name: sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                          if root / "runtimes" / name not in p.parents
                          and re.search(name, p.read_text(), re.IGNORECASE))
             for name in NAMES_ALLOWED}
    assert found == NAMES_ALLOWED
