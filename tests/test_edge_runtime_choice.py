"""The runtime of a CPU INT8 model: chosen by `marsedge quantize` among the installed runtimes,
recorded in the file (`marsedge.runtime`), followed by open_backend (edge-run, bench) unless
`--backend` says otherwise; without OpenVINO, ONNX Runtime's candidates only."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from marsedge.deploy.runtime_choice import plan
from marsedge.edge.onnx_meta import RUNTIME, file_props, recorded_runtime
from marsedge.runtimes.choice import backend_for, default_streams, open_backend
from marsedge.runtimes.onnxruntime.recipes import AUTO_CPU_RECIPES
from marsedge.runtimes.openvino import AUTO_RECIPES as AUTO_OPENVINO_RECIPES

REPO = Path(__file__).resolve().parents[1]
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino is not installed (pip install .[openvino])")


def _with_props(src: Path, dst: Path, props: dict[str, str]) -> Path:
    import onnx

    from marsedge.edge.onnx_meta import set_props

    model = onnx.load(str(src))
    set_props(model, props)
    onnx.save(model, str(dst))
    return dst


def test_metadata_props_are_read_without_onnx_or_a_runtime(edge_student, tmp_path):
    import onnx

    path = _with_props(edge_student[1], tmp_path / "m.onnx", {RUNTIME: "openvino", "k" * 200: "é" * 300})
    expected = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert file_props(path) == expected and recorded_runtime(path) == "openvino"
    assert recorded_runtime(edge_student[1]) is None  # an export names no runtime
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError):
        file_props(truncated)
    assert recorded_runtime(truncated) is None and recorded_runtime(tmp_path / "missing.onnx") is None


@needs_openvino
def test_candidates_span_the_installed_runtimes():
    ort = [(r, "onnxruntime") for r in AUTO_CPU_RECIPES]
    ov = [(r, "openvino") for r in AUTO_OPENVINO_RECIPES]
    assert plan("cpu", "auto", "auto", AUTO_CPU_RECIPES) == ov + ort  # the default runtime last
    assert plan("cpu", "auto", "qdq-u8s8", AUTO_CPU_RECIPES) == [("qdq-u8s8", "openvino"),
                                                                 ("qdq-u8s8", "onnxruntime")]
    assert plan("cpu", "auto", "qop-u8s8", AUTO_CPU_RECIPES) == [("qop-u8s8", "onnxruntime")]  # QOperator
    assert plan("cpu", "onnxruntime", "auto", AUTO_CPU_RECIPES) == ort
    assert plan("tensorrt", "auto", "auto", ("modelopt-int8",)) == [("modelopt-int8", "onnxruntime")]


@needs_openvino
def test_the_recorded_runtime_is_followed_and_backend_overrides(edge_student, tiny_ai4mars, tmp_path):
    path = _with_props(edge_student[1], tmp_path / "student.int8.onnx", {RUNTIME: "openvino"})
    assert backend_for(path) == backend_for(path, "auto") == "openvino"
    assert backend_for(path, "onnxruntime") == "onnxruntime"
    assert default_streams(path, None, 2) == 2  # a CPU runtime: two frames at once on two cores
    followed = open_backend(path, threads=1)
    assert followed.name == "openvino" and followed.metadata["runtime"] == "openvino"
    assert not hasattr(followed, "measured_ms")  # auto/unset defer to quantize's measurement: no re-timing
    assert open_backend(path, "onnxruntime", threads=1).name == "onnxruntime"
    from marsedge.bench.runner import BenchSettings, run_bench  # bench opens models the same way

    settings = BenchSettings(data=str(tiny_ai4mars), warmup=1, iters=2, duration=None, threads=1, samples=1)
    rows = run_bench([str(path), f"{path}@onnxruntime"], settings, tmp_path / "bench")["models"]
    assert [(r["status"], r["backend"]) for r in rows] == [("ok", "openvino"), ("ok", "onnxruntime")]
    plain = _with_props(edge_student[1], tmp_path / "plain.onnx", {RUNTIME: "onnxruntime"})
    assert open_backend(plain, threads=1).name == "onnxruntime"
    odd = _with_props(edge_student[1], tmp_path / "odd.onnx", {RUNTIME: "tflite"})
    with pytest.warns(RuntimeWarning, match="names runtime 'tflite', which is not installed"):
        assert backend_for(odd) == "onnxruntime"


@needs_openvino
def test_default_quantize_chooses_among_runtimes_and_edge_run_follows(edge_student, tiny_ai4mars, tmp_path):
    # As a user runs them, in child processes (OpenVINO's CPU plugins and the test process's signals:
    # see test_edge_openvino.py's signal test). One QDQ recipe, so the one file is a candidate on both
    # runtimes whichever wins (the auto recipe lists' plan is checked above).
    src = Path(shutil.copy(edge_student[1], tmp_path / "student.onnx"))
    command = [sys.executable, "-m", "marsedge", "quantize", str(src), "--calib", str(tiny_ai4mars),
               "--n", "8", "--min-frames", "8", "--tolerance", "1", "--min-speedup", "0", "--threads", "1",
               "--recipe", "qdq-u8s8-all", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "student.int8.onnx"
    props = file_props(out)
    record = json.loads(props["marsedge.quantization"])
    tried = record["tried"]
    assert [(t["recipe"], t["runtime"]) for t in tried] == [("qdq-u8s8-all", "openvino"),
                                                            ("qdq-u8s8-all", "onnxruntime")]
    fastest = min(tried, key=lambda t: t["ms"])
    assert record["runtime"] == fastest["runtime"] == props[RUNTIME]
    assert set(record["latency"]["fp32_ms_by_runtime"]) == {"onnxruntime", "openvino"}
    assert record["latency"]["fp32_ms"] == record["latency"]["fp32_ms_by_runtime"][record["runtime"]]
    chosen = f"qdq-u8s8-all@{record['runtime']}"
    assert f"runtime: {record['runtime']} ({chosen} is the fastest candidate passing" in done.stdout
    assert "candidates: qdq-u8s8-all@openvino" in done.stdout and "qdq-u8s8-all@onnxruntime" in done.stdout
    assert f"runs on {record['runtime']}" in done.stdout

    # edge-run follows the file's runtime without flags; --backend overrides it
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted((tiny_ai4mars / "msl/images/edr").iterdir())[:2]:
        shutil.copy(p, frames / p.name)
    # the file quantize wrote where it chose OpenVINO; else the same (QDQ) file, made to name OpenVINO
    ov_file = out if record["runtime"] == "openvino" else \
        _with_props(out, tmp_path / "ov.onnx", {RUNTIME: "openvino"})
    for flags, expected in (([], "openvino"), (["--backend", "onnxruntime"], "onnxruntime")):
        run_out = tmp_path / f"run-{expected}"
        ran = subprocess.run([sys.executable, "-m", "marsedge.edge.run", str(frames), str(run_out), "--model",
                              str(ov_file), "--threads", "1", "--backend-probe", "0", *flags],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert json.loads((run_out / "summary.json").read_text())["backend"]["name"] == expected


# Run with OpenVINO made unimportable for real: sys.modules["openvino"] = None makes `import openvino`
# raise ImportError and importlib.util.find_spec return None, as on a machine without it.
WITHOUT_OPENVINO = """
import json, sys, warnings
sys.modules["openvino"] = None
from marsedge.cli import main
from marsedge.runtimes.choice import open_backend
from marsedge.edge.onnx_meta import file_props
src, calib, ov_file = sys.argv[1:4]
code = main(["quantize", src, "--calib", calib, "--n", "8", "--min-frames", "8", "--tolerance", "1",
             "--min-speedup", "0", "--threads", "1", "--quiet"])
out = src.replace(".onnx", ".int8.onnx")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fallback = open_backend(ov_file, threads=1).name
print(json.dumps({"code": code, "props": file_props(out), "opened": open_backend(out, threads=1).name,
                  "fallback": fallback, "warned": [str(w.message) for w in caught]}))
"""


def test_without_openvino_quantize_and_backends_are_onnx_runtime_only(edge_student, tiny_ai4mars, tmp_path):
    src = Path(shutil.copy(edge_student[1], tmp_path / "student.onnx"))
    ov_file = _with_props(edge_student[1], tmp_path / "made-for-openvino.onnx", {RUNTIME: "openvino"})
    command = [sys.executable, "-c", WITHOUT_OPENVINO, str(src), str(tiny_ai4mars), str(ov_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    stdout_lines = done.stdout.strip().splitlines()
    result = json.loads(stdout_lines[-1])
    record = json.loads(result["props"]["marsedge.quantization"])
    assert result["code"] == 0 and result["props"][RUNTIME] == "onnxruntime" == record["runtime"]
    assert [(t["recipe"], t["runtime"]) for t in record["tried"]] == [(r, "onnxruntime")
                                                                      for r in AUTO_CPU_RECIPES]
    assert "fp32_ms_by_runtime" not in record["latency"]
    report = "\n".join(stdout_lines[:-1])
    assert "\nruntime: " not in report and "@onnxruntime" not in report and "runs on" not in report
    assert result["opened"] == "onnxruntime"
    # a file made for OpenVINO still runs, on ONNX Runtime, and says so
    assert result["fallback"] == "onnxruntime"
    assert any("names runtime 'openvino', which is not installed here" in w for w in result["warned"])
