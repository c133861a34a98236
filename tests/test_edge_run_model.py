"""Model checks at load: metadata that disagrees with the graph is refused before any frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
from edge_run_support import copy_frames

from marsedge.data.preprocess import PreprocessSpec
from marsedge.edge.run import main
from marsedge.errors import ModelError
from marsedge.runtimes.model_check import check_model
from marsedge.terrain import class_table


def _with_metadata(onnx_path, out_path, **changes):
    """A copy of the exported model whose marsedge metadata differs as given (the graph is kept)."""
    onnx = pytest.importorskip("onnx")
    from marsedge.edge.onnx_meta import CLASS_TABLE, PREPROCESS, set_props

    model = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    if "classes" in changes:
        props[CLASS_TABLE] = json.dumps(class_table()[: changes["classes"]])
    if "height" in changes:
        spec = json.loads(props[PREPROCESS])
        spec["height"] = changes["height"]
        props[PREPROCESS] = json.dumps(spec)
    set_props(model, props)
    onnx.save(model, str(out_path))
    return out_path


@pytest.mark.parametrize("change, message", [
    ({"classes": 5}, "metadata class table has 5 classes but the graph outputs 6 channels"),
    ({"height": 96}, "metadata input 1x96x64 (CxHxW) but the graph takes 1x64x64"),
])
def test_metadata_graph_mismatch_is_one_line_before_any_output(change, message, edge_student, tiny_ai4mars,
                                                               tmp_path, capsys):
    model = _with_metadata(edge_student[1], tmp_path / "lying.onnx", **change)
    copy_frames(tiny_ai4mars, tmp_path / "in", 2)
    out = tmp_path / "out"
    assert main([str(tmp_path / "in"), str(out), "--model", str(model)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"edge-run: error: {model}: {message}"]
    assert not out.exists()


class _Probed:
    """A backend without graph shapes (like torch): the check probes one blank frame."""

    name, precision = "fake", "fp32"

    def __init__(self, channels: int, table_len: int = 6) -> None:
        self.spec = PreprocessSpec(32, 32)
        self.metadata = {"class_table": class_table()[:table_len]}
        self.channels = channels

    def infer(self, batch):
        return np.zeros((batch.shape[0], self.channels, *batch.shape[2:]), np.float32)


def test_probe_checks_backends_without_graph_shapes():
    check_model(_Probed(6), "ok.pt")
    with pytest.raises(ModelError, match=r"m.pt: metadata class table has 6 classes but the graph outputs 7"):
        check_model(_Probed(7), "m.pt")
    bad_ids = _Probed(6)
    bad_ids.metadata["class_table"] = [dict(c, id=c["id"] * 2) for c in class_table()]
    with pytest.raises(ModelError, match="class table ids"):
        check_model(bad_ids, "m.pt")
