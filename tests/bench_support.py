"""Small real inputs for the bench tests: a hand-built ONNX segmenter and results rows from real maths.

The ONNX model is one 1x1 convolution (1 channel -> K class logits, logits_k = w_k * x + b_k; K = 6,
or fewer for a model of fewer classes) with marsedge metadata, so ONNX Runtime runs it for real and
a test can compute its masks with numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marsedge.bench import results as R
from marsedge.bench.latency import StageTimes, latency_report
from marsedge.data.preprocess import PreprocessSpec
from marsedge.metrics import segmentation_metrics
from marsedge.terrain import CLASS_NAMES, class_table

# slopes rise with the class id and intercepts fall, so the argmax walks through the classes as
# the pixel brightens: every class shows up on a varied frame
WEIGHTS = np.array([0.0, 2.0, 4.0, 6.0, 8.0, 10.0], dtype=np.float32)
BIASES = np.array([0.0, -0.3, -0.9, -1.8, -3.0, -4.5], dtype=np.float32)


def write_tiny_onnx(path: str | Path, size: int = 64, weights=WEIGHTS, biases=BIASES,
                    model_config: dict | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from marsedge.edge.onnx_meta import ModelMetadata, set_props

    k = len(weights)  # classes: the first k of the project's table (4: terrain only)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k, size, size])
    w = numpy_helper.from_array(np.asarray(weights, np.float32).reshape(k, 1, 1, 1), "w")
    b = numpy_helper.from_array(np.asarray(biases, np.float32), "b")
    conv = helper.make_node("Conv", ["image", "w", "b"], ["logits"])
    graph = helper.make_graph([conv], "tiny", [x], [y], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    meta = ModelMetadata(class_table(k), PreprocessSpec(size, size, 1, 1.5),
                         model_config or {"backbone": "tiny-conv", "head": "none"})
    set_props(model, meta.to_props())
    onnx.save(model, str(path))
    return Path(path)


def numpy_logits(batch: np.ndarray, weights=WEIGHTS, biases=BIASES) -> np.ndarray:
    """What the tiny ONNX model computes, in numpy: N,1,H,W -> N,6,H,W."""
    w = np.asarray(weights, np.float32)[None, :, None, None]
    return batch * w + np.asarray(biases, np.float32)[None, :, None, None]


def results_row(model_id: str, latency_ms: float, confusion: np.ndarray, seed: int = 0) -> dict:
    """An ok row with latency around `latency_ms` and accuracy from `confusion` (6x6 counts)."""
    rng = np.random.default_rng(seed)
    times = StageTimes()
    for _ in range(50):
        times.preprocess.append(0.1 * latency_ms)
        times.infer.append(0.8 * latency_ms * rng.uniform(0.95, 1.3))
        times.postprocess.append(0.1 * latency_ms)
    row = R.empty_row(model_id, f"/models/{model_id}")
    row.update(status=R.STATUS_OK, backend="onnxruntime", precision="fp32", input=[1, 64, 64],
               size_bytes=1234, params=12, macs=24576, latency=latency_report(times, 1.0, 5),
               memory={"rss_baseline_mb": 100.0, "rss_peak_mb": 150.0, "rss_model_mb": 50.0,
                       "device_mb": None})
    row["accuracy"] = {"metrics": segmentation_metrics(confusion, CLASS_NAMES),
                       "confusion": confusion.tolist(), "class_names": list(CLASS_NAMES),
                       "per_frame": [], "agreement": None}
    return row


def results_file(rows: list[dict], cpu: str = "test cpu") -> dict:
    results = R.new_results({"cpu": cpu, "cpu_count": 2, "libraries": {}, "gpus": [], "hints": []},
                            {"warmup": 5, "iters": 50, "duration": None, "size": None, "min_agreement": 0.95},
                            {"root": "/data", "split": "gold-min3", "frames": 3})
    results["models"] = rows
    return R.validate(results)


def confusion(diagonal: float, seed: int = 0) -> np.ndarray:
    """A 6x6 confusion matrix with `diagonal` of each row's pixels on the diagonal."""
    rng = np.random.default_rng(seed)
    m = rng.integers(10, 50, size=(6, 6)).astype(np.float64)
    np.fill_diagonal(m, 0)
    m = m / m.sum(axis=1, keepdims=True) * (1 - diagonal) * 1000
    np.fill_diagonal(m, diagonal * 1000)
    return np.round(m).astype(np.int64)
