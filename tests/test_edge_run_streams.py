"""edge-run with two inference streams (`--streams 2`): two frames in inference at once,
the threads split between them, and the outputs exactly those of one stream, in input order."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from edge_run_support import copy_frames

from marsedge.data.preprocess import PreprocessSpec
from marsedge.edge import pipeline
from marsedge.edge.hazards import HazardRules, load_hazard_config
from marsedge.edge.run import main
from marsedge.edge.sinks import Writer
from marsedge.errors import ModelError
from marsedge.runtimes.base import split_threads
from marsedge.runtimes.choice import default_streams, open_backend
from marsedge.runtimes.onnxruntime.runner import OnnxBackend
from marsedge.terrain import class_table


def _batches(n: int, size: int = 64) -> list[np.ndarray]:
    y, x = np.mgrid[0:size, 0:size] / size
    return [np.clip(0.3 + 0.4 * x + 0.2 * np.sin(6 * y + k), 0, 1)[None, None].astype(np.float32)
            for k in range(n)]


def _lines(out):
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def test_threads_are_split_between_streams():
    assert split_threads(None, 1, "m.onnx") is None and split_threads(3, 1, "m.onnx") == 3
    assert split_threads(4, 2, "m.onnx") == 2 and split_threads(2, 2, "m.onnx") == 1
    assert split_threads(1, 2, "m.onnx") == 1  # at least one each
    with pytest.raises(ModelError, match="m.onnx: streams must be at least 1"):
        split_threads(2, 0, "m.onnx")


def test_two_streams_by_default_on_a_cpu_runtime_with_two_cores(monkeypatch):
    assert default_streams("m.onnx", None, 2) == 2 and default_streams("m.onnx", "openvino", 4) == 2
    assert default_streams("m.onnx", None, 1) == 1  # one core: nothing to split
    assert default_streams("m.pt", None, 2) == default_streams("m.engine", None, 2) == 1
    # `--backend auto` opens a non-ONNX file by its suffix: an engine runs one frame at a time
    assert default_streams("m.engine", "auto", 2) == default_streams("m.pt", "auto", 2) == 1
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])  # onnxruntime-gpu
    assert default_streams("m.onnx", None, 2) == default_streams("m.onnx", "auto", 2) == 1
    assert default_streams("m.onnx", "openvino", 2) == 2  # OpenVINO's CPU plugin


def _concurrent(backend, batches):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(backend.infer, batches))


def test_onnx_runtime_streams_run_concurrently_with_the_sequential_results(edge_student):
    batches = _batches(8)
    one = OnnxBackend(edge_student[1], threads=2)
    two = open_backend(edge_student[1], threads=2, streams=2)
    assert two.streams == 2 and one.streams == 1
    assert two.session.get_session_options().intra_op_num_threads == 1  # 2 threads, 2 streams
    for got, batch in zip(_concurrent(two, batches), batches, strict=True):
        np.testing.assert_allclose(got, one.infer(batch), rtol=1e-5, atol=1e-5)


def test_openvino_streams_lend_one_request_per_call(edge_student):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install .[openvino])")
    from marsedge.runtimes.openvino.runner import OpenVinoBackend

    batches = _batches(8)
    one = OpenVinoBackend(edge_student[1], threads=2)
    two = OpenVinoBackend(edge_student[1], threads=2, streams=2)
    assert int(two.compiled.get_property("NUM_STREAMS")) == 2 and two.requests.qsize() == 2
    outputs = _concurrent(two, batches)
    assert two.requests.qsize() == 2  # every request came back
    for got, batch in zip(outputs, batches, strict=True):
        np.testing.assert_allclose(got, one.infer(batch), rtol=1e-4, atol=1e-4)
    assert not np.shares_memory(outputs[0], outputs[1])


def test_single_stream_backends_refuse_streams_with_one_line(edge_student):
    with pytest.raises(ModelError, match=r"student.*\.pt: the torch backend runs one frame at a time "
                                         r"\(streams 2 asked\)"):
        open_backend(edge_student[0], streams=2)


@pytest.mark.timeout(120)
def test_two_streams_write_every_frame_once_in_input_order(edge_student, tiny_ai4mars, tmp_path, monkeypatch):
    copy_frames(tiny_ai4mars, tmp_path / "in", 6)
    args = ["--model", str(edge_student[1]), "--threads", "2", "--backend-probe", "0.2"]
    assert main([str(tmp_path / "in"), str(tmp_path / "one"), *args, "--streams", "1"]) == 0
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["backend"]["streams"] == 1

    used, original = set(), pipeline.Pipeline.process

    def uneven(self, frame):  # frame 0 is the slowest: the second stream finishes frames 1.. first
        used.add(threading.current_thread().name)
        time.sleep(0.4 if frame.index == 0 else 0.0)
        return original(self, frame)

    monkeypatch.setattr(pipeline.Pipeline, "process", uneven)
    assert main([str(tmp_path / "in"), str(tmp_path / "two"), *args]) == 0  # 2 threads: 2 streams by default
    assert used == {"edge-run inference 1", "edge-run inference 2"}
    one, two = _lines(tmp_path / "one"), _lines(tmp_path / "two")
    assert [r["index"] for r in two] == list(range(6))  # input order, whatever order inference ended in
    drop = {"ms"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in two] == \
        [{k: v for k, v in r.items() if k not in drop} for r in one]
    for r in one:
        assert (tmp_path / "two" / r["mask"]).read_bytes() == (tmp_path / "one" / r["mask"]).read_bytes()
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["backend"]["streams"] == 2 and summary["backend_probe"]["streams"] == 2
    assert summary["frames_ok"] == 6 and summary["frames_dropped"] == 0


class _FailingBackend:
    """Two streams of a model that fails every frame."""

    name, precision, streams = "fake", "fp32", 2

    def __init__(self) -> None:
        self.spec = PreprocessSpec(32, 32)
        self.metadata = {"class_table": class_table()}
        self.calls = 0

    def infer(self, batch):
        self.calls += 1
        raise RuntimeError("device lost")


def test_model_failures_in_a_row_count_over_both_streams(tmp_path):
    backend = _FailingBackend()
    items = [pipeline.Item(name=f"f{i}.png", image=np.full((32, 32), 100, np.uint8)) for i in range(50)]
    table = backend.metadata["class_table"]
    writer = Writer(tmp_path, set(), 0.5, table)
    run = pipeline.Pipeline(items, backend, writer, HazardRules.for_model(load_hazard_config(None), table))
    run.run()
    assert run.fatal is not None and run.fatal[1] == pipeline.EXIT_MODEL
    assert ("the model failed on 5 frames in a row, last: inference failed: RuntimeError: device lost"
            in run.fatal[0])
    assert backend.calls <= pipeline.MAX_MODEL_FAILURES_IN_A_ROW + 1  # one more may be in the other stream


class _SlowBackend:
    name, precision, streams = "fake", "fp32", 2

    def __init__(self) -> None:
        self.spec = PreprocessSpec(16, 16)
        self.active = self.most = 0
        self.lock = threading.Lock()

    def infer(self, batch):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.01)
        with self.lock:
            self.active -= 1
        return batch


def test_backend_alone_calls_as_many_at_once_as_the_backend_has_streams():
    backend = _SlowBackend()
    probe = pipeline.backend_alone(backend, 0.2)
    assert backend.most == 2 and probe["streams"] == 2
    assert probe["calls"] >= 6 and probe["fps"] == pytest.approx(probe["calls"] / probe["seconds"], rel=1e-2)
