"""benchmarks/roofline.py (the roofline of benchmarks/cpu_runtimes.py): the graph's MACs are the
model's, the floors follow from them, and the runtimes' profiled kernels land in the right op type."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import roofline as roofline_module


@pytest.fixture(scope="module")
def roofline():
    return roofline_module


def test_floors_come_from_the_models_macs_and_bytes(roofline, edge_student):
    from marsedge.models.checkpoints import load_model
    from marsedge.models.summary import count_macs

    costs, _ = roofline.op_costs(edge_student[1])
    assert sum(c["macs"] for c in costs) == count_macs(load_model(edge_student[0])[0], (64, 64))["total"]
    floors = roofline.floors(costs, {"int8": 1e12, "fp32": 1e11}, bandwidth=1e10)
    int8, fp32 = floors["int8"]["ops"], floors["fp32"]["ops"]
    assert {"conv 1x1", "depthwise", "resize", "other"} <= set(int8)
    assert fp32["conv 1x1"]["mbytes"] == pytest.approx(4 * int8["conv 1x1"]["mbytes"], rel=0.01)
    assert int8["resize"]["mbytes"] == fp32["resize"]["mbytes"]  # Resize stays FP32 in every recipe
    for table in (int8, fp32):
        for t in table.values():
            assert t["floor_ms"] == max(t["compute_ms"], t["memory_ms"])
            assert t["bound"] == ("compute" if t["compute_ms"] >= t["memory_ms"] else "memory")
    assert int8["resize"]["bound"] == "memory" and int8["resize"]["compute_ms"] == 0  # no MACs


def test_profiled_kernels_are_read_by_op_type(roofline, edge_student):
    costs, names = roofline.op_costs(edge_student[1])
    frame = np.zeros((1, 1, 64, 64), np.float32)
    # ONNX Runtime fuses each Clip into the convolution before it and names the kernel after the Clip
    profile = roofline.profile_onnxruntime(edge_student[1], 1, frame, 2, names)
    assert {"conv 1x1", "depthwise", "resize"} <= set(profile)
    with_macs = {c["category"] for c in costs if c["macs"]}
    assert with_macs <= set(profile)
