"""One way to predict and score: the quantization gate and `marsedge bench` agree, any class table."""

from __future__ import annotations

import numpy as np
import pytest
from bench_support import BIASES, WEIGHTS, numpy_logits, write_tiny_onnx

from marsedge.bench.runner import BenchSettings, bench_model
from marsedge.data.ai4mars import AI4MarsDataset, Sample
from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.deploy.gate import accuracy_gate, gate_reference
from marsedge.edge.predict import predict, score
from marsedge.runtimes.onnxruntime.runner import OnnxBackend
from marsedge.terrain import BACKGROUND, IGNORE_INDEX, ROVER

SIZE = 32  # the model input; the tiny tree's frames and labels are 96 px


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    return {"six": write_tiny_onnx(folder / "six.onnx", SIZE),
            "four": write_tiny_onnx(folder / "four.onnx", SIZE, weights=WEIGHTS[:4], biases=BIASES[:4],
                                    model_config={"backbone": "tiny-conv", "num_classes": 4})}


def _bench(path, root, tmp_path, split="gold-min1") -> dict:
    settings = BenchSettings(data=str(root), split=split, warmup=0, iters=2, duration=None, threads=1)
    return bench_model(str(path), path.name, settings, str(tmp_path / f"{path.stem}.npz"))


def test_gate_and_bench_report_the_same_miou(models, tiny_ai4mars, tmp_path):
    row = _bench(models["six"], tiny_ai4mars, tmp_path)
    reference = gate_reference(models["six"], str(tiny_ai4mars), "gold-min1", threads=1)
    gate = accuracy_gate(reference, models["six"], tolerance=1.0, threads=1)
    bench_miou = row["accuracy"]["metrics"]["miou"]
    assert 0.0 < bench_miou < 1.0
    assert gate["miou_fp32"] == gate["miou_int8"] == pytest.approx(bench_miou, abs=1e-5)
    assert np.array_equal(reference.fp32.confusion.matrix, np.array(row["accuracy"]["confusion"]))
    assert gate["pixel_agreement"] == 1.0 and gate["passed"]


def test_masks_are_at_the_frame_size_nearest_from_the_argmax(models):
    backend = OnnxBackend(models["six"], threads=1)
    y, x = np.mgrid[0:96, 0:128]
    image = (255 * (x / 127.0)).astype(np.uint8)  # brightness walks through every class
    mask = predict(backend, image)
    assert mask.shape == (96, 128) and mask.dtype == np.uint8
    at_input = numpy_logits(preprocess(image, backend.spec)[None])[0].argmax(0)
    # nearest neighbour: every output pixel is some input pixel's decision, each class kept
    assert set(np.unique(mask)) == set(np.unique(at_input)) and len(np.unique(mask)) >= 4
    assert predict(backend, image, out_hw=(SIZE, SIZE)).shape == (SIZE, SIZE)


def test_a_four_class_model_scores_without_the_classes_it_lacks(models, tiny_ai4mars, tmp_path):
    backend = OnnxBackend(models["four"], threads=1)
    label = np.zeros((96, 96), np.uint8)
    label[:10] = ROVER
    label[10:20] = BACKGROUND
    label[20:30] = IGNORE_INDEX
    image = np.full((96, 96), 40, np.uint8)
    scores = score(backend, [Sample(image, label, "msl", "frame")])
    assert scores.class_names == ["soil", "bedrock", "sand", "big rock"]
    assert scores.confusion.matrix.shape == (4, 4)
    assert scores.confusion.matrix.sum() == 96 * 66  # rover, background and unlabelled rows ignored
    # benched and gated on a split whose labels do carry rover and background
    data = AI4MarsDataset(tiny_ai4mars, "gold-min1")
    assert any(np.isin(s.label, (ROVER, BACKGROUND)).any() for s in data)
    row = _bench(models["four"], tiny_ai4mars, tmp_path)
    assert row["status"] == "ok" and len(row["accuracy"]["confusion"]) == 4
    reference = gate_reference(models["four"], str(tiny_ai4mars), "gold-min1", threads=1)
    gate = accuracy_gate(reference, models["four"], tolerance=1.0, threads=1)
    assert gate["passed"] and set(gate["iou_drop"]) == {"soil", "bedrock", "sand", "big rock"}
    assert gate["miou_fp32"] == pytest.approx(row["accuracy"]["metrics"]["miou"], abs=1e-5)


def test_spec_defaults_to_the_models_own(models):
    backend = OnnxBackend(models["six"], threads=1)
    image = np.full((64, 64), 128, np.uint8)
    assert backend.spec == PreprocessSpec(SIZE, SIZE, 1, 1.5)
    assert np.array_equal(predict(backend, image), predict(backend, image, backend.spec))


def test_edge_imports_nothing_from_bench():
    """bench builds on edge (predict, backends), never the reverse; timing lives below both."""
    import ast
    from pathlib import Path

    import marsedge.edge

    upward = []
    for path in sorted(Path(marsedge.edge.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            upward += [f"{path.name}: {n}" for n in names if n.split(".")[:2] == ["marsedge", "bench"]]
    assert upward == []
