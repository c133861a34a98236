"""Parameters and MACs: hand-counted on a one-conv model, the same for FP32 and INT8, torch = ONNX."""

from __future__ import annotations

import numpy as np
import pytest
from bench_support import write_tiny_onnx

from marsedge.bench.modelinfo import model_info

SIZE = 32


def test_onnx_params_and_macs_hand_counted(tmp_path):
    path = write_tiny_onnx(tmp_path / "tiny.onnx", SIZE)
    info = model_info(path, (1, SIZE, SIZE))
    assert info["params"] == 6 + 6  # 6x1x1x1 weights + 6 biases
    assert info["macs"] == 6 * SIZE * SIZE  # one MAC per output pixel and class
    assert info["size_bytes"] == path.stat().st_size


@pytest.mark.parametrize("layout", ["QDQ", "QOperator"])
def test_int8_model_counts_the_same_weights_and_macs(tmp_path, layout):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    fp32 = write_tiny_onnx(tmp_path / "tiny.onnx", SIZE)

    class Frames(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            frames = rng.random((4, 1, 1, SIZE, SIZE), dtype=np.float32)
            self.batches = iter([{"image": frame} for frame in frames])

        def get_next(self):
            return next(self.batches, None)

    int8 = tmp_path / "tiny.int8.onnx"
    quantize_static(str(fp32), str(int8), Frames(), quant_format=getattr(QuantFormat, layout),
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    import onnx

    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert ("QLinearConv" in ops) == (layout == "QOperator")  # really the layout asked for
    info = model_info(int8, (1, SIZE, SIZE))
    assert info["params"] == 12  # scales and zero points are not parameters
    assert info["macs"] == 6 * SIZE * SIZE


def test_torch_macs_match_onnx_on_the_same_conv(tmp_path):
    torch = pytest.importorskip("torch")
    from marsedge.bench.modelinfo import torch_info

    conv = torch.nn.Conv2d(1, 6, kernel_size=3, padding=1)
    info = torch_info(conv, (1, SIZE, SIZE))
    assert info["params"] == 6 * 9 + 6
    assert info["macs"] == 6 * SIZE * SIZE * 9
