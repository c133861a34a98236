"""export never replaces a file that appeared at its output while it ran, and two exports to one
folder do not share a temporary file."""

from __future__ import annotations

import pytest

from marsedge.deploy import export as export_module
from marsedge.io import OutputAppeared


def test_an_onnx_that_appeared_during_the_export_is_kept(edge_student, tmp_path, monkeypatch):
    ckpt, _ = edge_student
    out = tmp_path / "student.onnx"
    real_verify = export_module.verify
    temporaries = []

    def verify_while_another_export_finishes(*args, **kwargs):
        temporaries.extend(p.name for p in tmp_path.iterdir())
        out.write_bytes(b"another export's result")
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(export_module, "verify", verify_while_another_export_finishes)
    with pytest.raises(OutputAppeared, match="student.onnx: appeared") as caught:
        export_module.export(ckpt, out, verify_frames=1)
    assert out.read_bytes() == b"another export's result"
    assert caught.value.kept.stat().st_size > 10_000  # this export's graph, kept beside it
    assert temporaries == []  # the raw TorchScript export is gone before verification
    export_module.export(ckpt, out, verify_frames=1, overwrite=True)  # asked: replaced
    assert out.stat().st_size > 10_000
