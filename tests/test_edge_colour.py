"""Colour, end to end: an `in_channels: 3` model exported with its spec, run by edge-run on M2020
colour frames (and a greyscale frame, replicated) and benched on m2020-train; a one-channel model
on colour frames uses its spec's `colour_to_grey` luminance at the edge."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from bench_support import numpy_logits, write_tiny_onnx

from marsedge.bench.runner import BenchSettings, bench_model
from marsedge.data.frames import read_frame
from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.edge.onnx_meta import read_onnx_metadata
from marsedge.edge.run import main
from marsedge.errors import ModelError
from marsedge.runtimes.onnxruntime.runner import OnnxBackend

SIZE = 64


def _checkpoint(path, in_channels: int, spec_channels: int):
    import torch

    from marsedge.models.build import ModelConfig, build_model
    from marsedge.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="mnv2_0.35", head="deeplabv3plus", head_channels=32, separable=True,
                      in_channels=in_channels)
    model = build_model(cfg).eval()
    with torch.no_grad():  # non-trivial statistics, so the classes vary over a frame
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return save_checkpoint(path, model, cfg, PreprocessSpec(SIZE, SIZE, channels=spec_channels))


@pytest.fixture(scope="module")
def colour_model(tiny_ai4mars, tmp_path_factory):
    from marsedge.deploy.export import export

    folder = tmp_path_factory.mktemp("colour")
    ckpt = _checkpoint(folder / "colour.pt", 3, 3)
    onnx_path, check = export(ckpt, folder / "colour.onnx", verify_frames=2,
                              frames=str(tiny_ai4mars / "m2020/images/ncam"))
    assert check.source == "real" and check.argmax_agreement >= 0.999  # verified on colour frames
    return onnx_path


def test_the_colour_spec_is_recorded_in_the_onnx_metadata(colour_model):
    meta = read_onnx_metadata(colour_model)
    assert meta.preprocess == PreprocessSpec(SIZE, SIZE, channels=3)
    assert meta.model_config["in_channels"] == 3
    backend = OnnxBackend(colour_model, threads=1)
    assert backend.session.get_inputs()[0].shape[1] == 3 and backend.spec.channels == 3


def test_a_colour_model_runs_on_m2020_colour_frames_and_a_grey_one(colour_model, tiny_ai4mars, tmp_path):
    frames = tmp_path / "in"
    frames.mkdir()
    for path in sorted((tiny_ai4mars / "m2020/images/ncam").iterdir()):
        shutil.copy(path, frames / path.name)
    grey = read_frame(sorted((tiny_ai4mars / "msl/images/edr").iterdir())[0])
    assert grey.ndim == 2
    cv2.imwrite(str(frames / "grey.png"), grey)
    cv2.imwrite(str(frames / "grey_as_rgb.png"), np.repeat(grey[:, :, None], 3, axis=2))
    out = tmp_path / "out"
    assert main([str(frames), str(out), "--model", str(colour_model), "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_ok"] == 8 and summary["frames_failed"] == 0
    assert summary["model_metadata"]["preprocess"]["channels"] == 3
    lines = {r["name"]: r for r in map(json.loads, (out / "frames.jsonl").read_text().splitlines())}
    masks = {n: cv2.imread(str(out / r["mask"]), cv2.IMREAD_UNCHANGED) for n, r in lines.items()}
    colour = sorted(n for n in lines if not n.startswith("grey"))[0]
    assert masks[colour].shape == read_frame(frames / colour).shape[:2]
    # a greyscale frame is replicated to R = G = B: the same mask as the RGB file of that grey
    assert np.array_equal(masks["grey.png"], masks["grey_as_rgb.png"])
    # the edge's mask is PyTorch's on the frame as training prepares it (the checkpoint's own spec)
    import torch

    from marsedge.models.checkpoints import load_model

    model, ckpt = load_model(colour_model.with_suffix(".pt"))
    rgb = read_frame(frames / colour)
    with torch.inference_mode():
        logits = model(torch.from_numpy(preprocess(rgb, PreprocessSpec.from_dict(ckpt.preprocess))[None]))
    expected = cv2.resize(logits.argmax(1)[0].numpy().astype(np.uint8), rgb.shape[1::-1],
                          interpolation=cv2.INTER_NEAREST)
    assert np.mean(masks[colour] == expected) > 0.999


def _rgb_conv_onnx(path):
    """A 3-channel 1x1 conv whose class is the dominant colour: 0 red, 1 green, 2 blue (3-5 never)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from marsedge.edge.onnx_meta import ModelMetadata, set_props
    from marsedge.terrain import class_table

    w = np.zeros((6, 3, 1, 1), np.float32)
    w[[0, 1, 2], [0, 1, 2]] = 1.0
    b = np.array([0, 0, 0, -9, -9, -9], np.float32)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 6, 32, 32])
    graph = helper.make_graph([helper.make_node("Conv", ["image", "w", "b"], ["logits"])], "rgb", [x], [y],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    set_props(model, ModelMetadata(class_table(), PreprocessSpec(32, 32, channels=3, gain=1.0),
                                   {"backbone": "rgb-conv", "in_channels": 3}).to_props())
    onnx.save(model, str(path))
    return path


def test_colour_reaches_a_colour_model_through_edge_run(tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :20, 0], rgb[:, 20:44, 1], rgb[:, 44:, 2] = 200, 180, 220  # red, green, blue bands
    rgb += 20
    frames = tmp_path / "in"
    frames.mkdir()
    cv2.imwrite(str(frames / "bands.png"), rgb[:, :, ::-1])
    out = tmp_path / "out"
    assert main([str(frames), str(out), "--model", str(_rgb_conv_onnx(tmp_path / "rgb.onnx"))]) == 0
    mask = cv2.imread(str(out / "masks/bands.png.png"), cv2.IMREAD_UNCHANGED)
    assert (mask[:, :18] == 0).all() and (mask[:, 22:42] == 1).all() and (mask[:, 46:] == 2).all()

def test_a_colour_model_is_benched_on_m2020_train(colour_model, tiny_ai4mars, tmp_path):
    settings = BenchSettings(data=str(tiny_ai4mars), split="m2020-train", warmup=0, iters=2, duration=None,
                             threads=1)
    row = bench_model(str(colour_model), "colour", settings, str(tmp_path / "c.npz"))
    assert row["status"] == "ok" and row["input"] == [3, SIZE, SIZE]
    assert 0.0 <= row["accuracy"]["metrics"]["pixel_accuracy"] <= 1.0 and row["accuracy"]["per_frame"]


def _grey_model_with(path, colour_to_grey: str):
    onnx = pytest.importorskip("onnx")
    from marsedge.edge.onnx_meta import PREPROCESS, set_props

    write_tiny_onnx(path, 32)
    model = onnx.load(str(path))
    spec = PreprocessSpec(32, 32, channels=1, colour_to_grey=colour_to_grey)
    set_props(model, {PREPROCESS: json.dumps(spec.to_dict())})
    onnx.save(model, str(path))
    return path, spec


def test_a_grey_model_on_colour_frames_uses_its_specs_luminance(tmp_path):
    y, x = np.mgrid[0:96, 0:96]
    rgb = np.stack([x * 255 // 95, 255 - x * 255 // 95, y * 255 // 95], axis=2).astype(np.uint8)
    frames = tmp_path / "in"
    frames.mkdir()
    cv2.imwrite(str(frames / "colour.png"), rgb[:, :, ::-1])
    masks = {}
    for method, weights in (("bt601", (0.299, 0.587, 0.114)), ("bt709", (0.2126, 0.7152, 0.0722))):
        model, spec = _grey_model_with(tmp_path / f"{method}.onnx", method)
        out = tmp_path / method
        assert main([str(frames), str(out), "--model", str(model), "--threads", "1"]) == 0
        masks[method] = cv2.imread(str(out / "masks/colour.png.png"), cv2.IMREAD_UNCHANGED)
        grey = np.clip(rgb.astype(np.float64) @ np.array(weights) + 0.5, 0, 255).astype(np.uint8)
        small = numpy_logits(preprocess(grey, spec)[None])[0].argmax(0).astype(np.uint8)
        expected = cv2.resize(small, (96, 96), interpolation=cv2.INTER_NEAREST)
        assert np.mean(masks[method] == expected) > 0.98  # (OpenCV's fixed-point BT.601 rounds apart)
    assert np.mean(masks["bt601"] != masks["bt709"]) > 0.05  # the spec's choice is what the edge applied


def test_a_checkpoint_whose_channels_disagree_is_refused_by_export(tmp_path):
    from marsedge.deploy.export import export

    ckpt = _checkpoint(tmp_path / "bad.pt", 3, 1)
    with pytest.raises(ModelError, match=r"bad.pt: model_config.in_channels 3 but preprocess.channels 1"):
        export(ckpt, tmp_path / "bad.onnx", verify_frames=1)
    assert not (tmp_path / "bad.onnx").exists()
