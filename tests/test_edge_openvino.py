"""OpenVinoBackend: the Backend contract on OpenVINO, QDQ files run as INT8, QOperator files refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from marsedge.errors import ModelError
from marsedge.runtimes.choice import backend_for, open_backend
from marsedge.runtimes.onnxruntime.runner import OnnxBackend

pytest.importorskip("openvino", reason="openvino is not installed (pip install .[openvino])")

from marsedge.runtimes.openvino.runner import OpenVinoBackend  # noqa: E402  (after the skip)


def _batch(n: int, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    frames = [np.clip(0.3 + 0.4 * x + 0.2 * np.sin(6 * y + k), 0, 1) for k in range(n)]
    return np.stack(frames)[:, None].astype(np.float32)


def test_fp32_onnx_on_openvino_matches_onnx_runtime(edge_student):
    onnx_path = edge_student[1]
    ov, ort = OpenVinoBackend(onnx_path, threads=1), OnnxBackend(onnx_path, threads=1)
    assert (ov.name, ov.precision, ov.engine_batch) == ("openvino", "fp32", 1)
    assert ov.metadata == ort.metadata and ov.spec == ort.spec  # read from the file, without onnx
    batch = _batch(3)  # a static batch-1 export still serves 3 frames
    ref, out = ort.infer(batch), ov.infer(batch)
    assert out.shape == ref.shape == (3, 6, 64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-3, rtol=1e-3)
    assert not np.shares_memory(ov.infer(batch[:1]), ov.infer(batch[1:2]))  # outputs are not reused buffers
    with pytest.raises(ModelError, match="expects N x 1x64x64"):
        ov.infer(np.zeros((1, 1, 32, 32), np.float32))
    with pytest.raises(ModelError, match="preprocessed float32"):
        ov.infer(np.zeros((1, 1, 64, 64), np.uint8))
    ov.close()


def test_bf16_is_opt_in_and_reported(edge_student):
    ov = OpenVinoBackend(edge_student[1], threads=1, inference_precision="bf16")
    assert ov.precision == "bf16"
    out = ov.infer(_batch(1))
    ref = OnnxBackend(edge_student[1], threads=1).infer(_batch(1))
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.9
    with pytest.raises(ModelError, match="inference precision must be one of"):
        OpenVinoBackend(edge_student[1], inference_precision="f16x")


@pytest.fixture(scope="module")
def int8_files(edge_student, tiny_ai4mars, tmp_path_factory):
    from marsedge.deploy.quantize import QuantizeOptions, quantize_model

    folder = tmp_path_factory.mktemp("ov")
    src = folder / "student.onnx"
    shutil.copy(edge_student[1], src)
    files = {}
    for recipe in ("qdq-u8s8", "qop-u8s8"):
        options = QuantizeOptions(method="max", n=8, min_frames=8, tolerance=1.0, min_speedup=0,
                                  recipe=recipe, progress=False)
        with pytest.warns(UserWarning):
            files[recipe], _ = quantize_model(src, str(tiny_ai4mars), folder / f"{recipe}.onnx", None,
                                              options)
    return files


def test_qdq_int8_runs_on_openvino_and_qoperator_is_refused(int8_files):
    qdq = OpenVinoBackend(int8_files["qdq-u8s8"], threads=1)
    assert qdq.precision == "int8" and qdq.metadata["quantization"]["recipe"] == "qdq-u8s8"
    batch = _batch(2)
    ort = OnnxBackend(int8_files["qdq-u8s8"], threads=1).infer(batch)
    out = qdq.infer(batch)
    assert (out.argmax(1) == ort.argmax(1)).mean() > 0.95  # same INT8 file, two runtimes
    with pytest.raises(ModelError, match="QOperator INT8 layout .*qdq-\\* recipe"):
        OpenVinoBackend(int8_files["qop-u8s8"])


def test_chosen_by_name_suffix_or_auto(edge_student, int8_files, tmp_path):
    assert backend_for("m.onnx", "openvino") == "openvino" and backend_for("model.xml") == "openvino"
    assert open_backend(edge_student[1], "openvino", threads=1).name == "openvino"
    assert open_backend(edge_student[1], threads=1).name == "onnxruntime"  # ONNX Runtime stays the default
    auto = open_backend(edge_student[1], "auto", threads=1)
    assert auto.name in ("onnxruntime", "openvino") and set(auto.measured_ms) == {"onnxruntime", "openvino"}
    assert auto.measured_ms[auto.name] == min(auto.measured_ms.values())  # the faster one, as measured
    # a QOperator file OpenVINO cannot run: auto falls back to ONNX Runtime
    assert open_backend(int8_files["qop-u8s8"], "auto", threads=1).name == "onnxruntime"
    # an IR saved from a marsedge ONNX keeps the description
    import openvino

    openvino.save_model(openvino.Core().read_model(str(edge_student[1])), str(tmp_path / "student.xml"))
    ir = open_backend(tmp_path / "student.xml", threads=1)
    assert ir.name == "openvino" and ir.spec == OnnxBackend(edge_student[1]).spec
    with pytest.raises(ModelError, match="no such model file"):
        OpenVinoBackend(tmp_path / "missing.onnx")


def test_onnx_without_marsedge_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelError, match="no marsedge metadata"):
        OpenVinoBackend(path)


def test_bench_rows_for_one_file_on_both_cpu_runtimes(edge_student, tiny_ai4mars, tmp_path):
    from marsedge.bench.runner import BenchSettings, run_bench, split_backend

    assert split_backend("a/student.onnx@openvino") == ("a/student.onnx", "openvino")
    assert split_backend("a/odd@name.onnx") == ("a/odd@name.onnx", None)  # not a backend: part of the path
    onnx_path = str(edge_student[1])
    settings = BenchSettings(data=str(tiny_ai4mars), warmup=1, iters=3, duration=None, threads=1, samples=1)
    rows = run_bench([onnx_path, f"{onnx_path}@openvino"], settings, tmp_path / "out")["models"]
    assert [r["id"] for r in rows] == ["student.onnx", "student.onnx@openvino"]
    assert [(r["status"], r["backend"]) for r in rows] == [("ok", "onnxruntime"), ("ok", "openvino")]
    agreement = rows[1]["accuracy"]["agreement"]  # against the ONNX Runtime row of the same model
    assert agreement["reference"] == "student.onnx" and agreement["value"] > 0.99



# Two backends (two OpenVINO Cores, two CPU plugins), freed in the order they were made: each plugin
# gave the thread a signal stack of its own and hands back, when freed, the one it found, so without
# marsedge's guard the thread is left on the first plugin's freed stack and the SIGINT kills the
# process with SIGSEGV (OpenVINO 2026.4.1; measured by running this with the guard patched out).
SIGNAL_AFTER_OPENVINO = """
import ctypes, faulthandler, gc, signal, sys
import numpy as np
from marsedge.runtimes.openvino import runner as ovb
faulthandler.enable()  # as pytest does: the thread has an alternate signal stack of Python's
def stack():
    s = ovb._SignalStack()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(s))
    return (s.ss_sp, s.ss_size, s.ss_flags)
before = stack()
backends = [ovb.OpenVinoBackend(sys.argv[1], threads=1),
            ovb.OpenVinoBackend(sys.argv[1], threads=2, streams=2)]
for backend in backends:
    spec = backend.spec
    backend.infer(np.zeros((1, spec.channels, spec.height, spec.width), np.float32))
    backend.close()
first = backends.pop(0)
del first
gc.collect()
backends.clear()
gc.collect()
got = []
signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
signal.raise_signal(signal.SIGINT)
print(stack() == before, got)
"""


@pytest.mark.timeout(120)
def test_a_signal_after_openvino_backends_are_freed_is_delivered(edge_student):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_OPENVINO, str(edge_student[1])],
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, f"died of signal {-done.returncode}: {done.stderr[-1000:]}"
    assert done.stdout.split() == ["True", "[2]"]  # the thread's own stack, and the handler ran
