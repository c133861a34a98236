"""Backends and export: one contract, same outputs, self-describing models."""

from __future__ import annotations

import numpy as np
import pytest

from marsedge.data.preprocess import PreprocessSpec
from marsedge.deploy import export as export_module
from marsedge.errors import ModelError
from marsedge.runtimes.choice import backend_for, open_backend
from marsedge.runtimes.onnxruntime.runner import OnnxBackend


def _batch(spec: PreprocessSpec, n: int = 2) -> np.ndarray:
    # smooth structured frames (a gradient plus blobs), not noise, so class decisions are stable
    y, x = np.mgrid[0:spec.height, 0:spec.width] / spec.height
    frames = [np.clip(0.3 + 0.4 * x + 0.2 * np.sin(6 * y + k), 0, 1) for k in range(n)]
    return np.stack(frames)[:, None].astype(np.float32)


def test_torch_and_onnx_backends_agree(edge_student):
    ckpt, onnx_path = edge_student
    torch_b = open_backend(ckpt, threads=1)
    onnx_b = open_backend(onnx_path, threads=1)
    assert (torch_b.name, onnx_b.name) == ("torch", "onnxruntime")
    assert torch_b.spec == onnx_b.spec == PreprocessSpec(64, 64)
    batch = _batch(onnx_b.spec, 3)  # a static batch-1 export still serves 3 frames
    ref, out = torch_b.infer(batch), onnx_b.infer(batch)
    assert out.shape == ref.shape == (3, 6, 64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.999


def test_onnx_metadata_describes_the_model(edge_student):
    ckpt, onnx_path = edge_student
    backend = OnnxBackend(onnx_path)
    meta = backend.metadata
    assert [c["name"] for c in meta["class_table"]][:4] == ["soil", "bedrock", "sand", "big rock"]
    assert meta["preprocess"] == {"height": 64, "width": 64, "channels": 1, "gain": 1.5,
                                  "bit_depth_mapping": "linear", "percentile_low": 0.5,
                                  "percentile_high": 99.5, "colour_to_grey": "bt601"}
    assert meta["model_config"]["backbone"] == "mnv2_0.35"
    from marsedge.io import sha256_file

    assert meta["source_sha256"] == sha256_file(ckpt)
    assert backend.precision == "fp32" and backend.providers[-1] == "CPUExecutionProvider"


def test_wrong_input_shape_is_refused(edge_student):
    backend = OnnxBackend(edge_student[1])
    with pytest.raises(ModelError, match="expects N x 1x64x64"):
        backend.infer(np.zeros((1, 1, 32, 32), np.float32))


def test_backend_choice_by_suffix_and_errors(tmp_path):
    assert backend_for("a/b.onnx") == "onnxruntime"
    assert backend_for("m.engine") == "tensorrt"
    assert backend_for("m.pt") == "torch"
    assert backend_for("m.engine", "auto") == "tensorrt" and backend_for("m.pt", "auto") == "torch"
    assert backend_for("m.bin", "onnxruntime") == "onnxruntime"
    with pytest.raises(ModelError, match="cannot tell the backend"):
        backend_for("model.tflite")
    with pytest.raises(ModelError, match="unknown backend"):
        backend_for("m.onnx", "tvm")
    with pytest.raises(ModelError, match="no such model file"):
        open_backend(tmp_path / "missing.onnx")


def test_onnx_without_marsedge_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])
    graph = helper.make_graph([node], "g", [x], [y])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelError, match="no marsedge metadata"):
        OnnxBackend(path)


def test_export_refuses_to_write_a_model_that_disagrees(edge_student, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "MIN_AGREEMENT", 1.01)  # unreachable: every export "disagrees"
    out = tmp_path / "x.onnx"
    with pytest.raises(ModelError, match="disagrees with PyTorch"):
        export_module.export(edge_student[0], out, verify_frames=1, simplify=False)
    assert not out.exists()


def test_export_dynamic_batch_and_size_override(edge_student, tmp_path, capsys):
    out, result = export_module.export(edge_student[0], tmp_path / "d.onnx", size=96, dynamic_batch=True,
                                       verify_frames=1, simplify=False)
    backend = OnnxBackend(out)
    assert backend.spec.size == (96, 96) and backend.engine_batch is None
    assert backend.infer(np.zeros((2, 1, 96, 96), np.float32)).shape == (2, 6, 96, 96)
    assert result.argmax_agreement >= 0.999 and result.max_abs_error < 1e-3
    # another size than the trained one is stated and recorded, not a silent replacement
    assert backend.model_metadata.trained_size == [64, 64] and backend.metadata["trained_size"] == [64, 64]
    assert "trained at 64x64" in capsys.readouterr().out
    assert OnnxBackend(edge_student[1]).model_metadata.trained_size is None


def test_base_backend_checks_input_once_and_splits_to_the_fixed_batch(tmp_path):
    from marsedge.edge.onnx_meta import ModelMetadata
    from marsedge.runtimes.base import BaseBackend
    from marsedge.terrain import class_table

    class Fixed(BaseBackend):  # a batch-2 model whose logits echo the frame index
        name = "fixed"

        def __init__(self) -> None:
            self.path = tmp_path / "fixed.model"
            self.model_metadata = ModelMetadata(class_table(), PreprocessSpec(8, 8))
            self.engine_batch = 2
            self.calls = []

        def infer_impl(self, batch):
            assert batch.dtype == np.float32 and batch.flags.c_contiguous
            self.calls.append(batch.shape[0])
            return np.repeat(batch[:, :1], 6, axis=1)

    backend = Fixed()
    frames = np.arange(5, dtype=np.float64)[:, None, None, None] * np.ones((5, 1, 8, 8))
    out = backend.infer(frames)
    assert backend.calls == [2, 2, 2] and out.shape == (5, 6, 8, 8)  # the short last chunk padded
    assert np.array_equal(out[:, 0, 0, 0], np.arange(5))
    assert backend.spec == PreprocessSpec(8, 8) and backend.metadata["preprocess"]["height"] == 8
    with pytest.raises(ModelError, match="fixed.model: expects preprocessed float32 input.*uint8"):
        backend.infer(np.zeros((1, 1, 8, 8), np.uint8))
    with pytest.raises(ModelError, match="fixed.model: expects N x 1x8x8 input"):
        backend.infer(np.zeros((1, 3, 8, 8), np.float32))
    assert backend.calls == [2, 2, 2]  # refused before the model ran
