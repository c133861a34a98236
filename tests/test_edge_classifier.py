"""An MSL surface classifier through the edge: export, quantize (gate on top-1), bench + report,
edge-run, all on a release laid out as the published v2.1 one (written here from its public
description, not by `marsedge data synth-classes`).

The v2.1 layout (Zenodo 4033453): `msl-labeled-data-set-v2.1/` holds `images/*.jpg`,
`class_map.csv` (`<id>,<name>`) and `{train,val,test}-set-v2.1.txt` (`<file name> <class id>` per
line); file names start with the sol, and the splits are chronological by sol.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from marsedge.data.labelled import open_labelled
from marsedge.edge.predict import score, score_images
from marsedge.errors import DataError

CLASSES = ["wheel", "sun", "drill hole"]  # three of v2.1's class names, ids in this order
SPLITS = {"train": (1, 36), "val": (400, 12), "test": (700, 15)}  # first sol, images


def _image(cls: int, rng: np.random.Generator) -> np.ndarray:
    """48x48 RGB: a class look the tiny model can learn in a few steps, with noise."""
    img = rng.normal(0, 12, (48, 48, 3))
    if cls == 0:
        img += 70
    elif cls == 1:
        img += 200
    else:
        img += np.where((np.arange(48) // 6) % 2 == 0, 40, 190)[None, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("msl_v21")
    folder = root / "msl-labeled-data-set-v2.1"
    (folder / "images").mkdir(parents=True)
    (folder / "class_map.csv").write_text("".join(f"{i},{n}\n" for i, n in enumerate(CLASSES)))
    rng = np.random.default_rng(0)
    for split, (sol, n) in SPLITS.items():
        lines = []
        for k in range(n):
            cls = k % len(CLASSES)
            name = f"{sol + k:04d}MR{k:07d}0100001E01_DRCL.jpg"
            cv2.imwrite(str(folder / "images" / name), _image(cls, rng)[:, :, ::-1])
            lines.append(f"{name} {cls}\n")
        (folder / f"{split}-set-v2.1.txt").write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def trained(release, tmp_path_factory):
    """A tiny classifier trained by `mode: classify` (CE) and exported: (run folder, ONNX, summary)."""
    from marsedge.deploy.export import export
    from marsedge.train.config import load_train_config
    from marsedge.train.modes import resolve_mode

    out = tmp_path_factory.mktemp("runs")
    overrides = [
        "name=cls", "mode=classify", f"classify.root={release}", f"run.out_dir={out}",
        "classify.objective=ce", "epochs=6", "batch_size=6", "data.eval_batch_size=16",
        "data.preprocess.height=32", "data.preprocess.width=32", "data.preprocess.channels=3",
        "data.preprocess.gain=1.0", "model.in_channels=3", "model.output_stride=32",
        "model.backbone=r18_0.25x_sk0", "optim.lr=0.003", "optim.name=adamw", "num_workers=0",
        "run.device=cpu", "run.progress=false",
    ]
    cfg = load_train_config(resolve_mode("classify").config, None, overrides)
    summary = resolve_mode("classify").run(cfg)
    onnx_path, verification = export(out / "cls" / "best.pt", out / "cls.onnx", verify_frames=2)
    assert verification.argmax_agreement == 1.0  # per image for a classifier
    return out / "cls", onnx_path, summary


def _onnx(path):
    from marsedge.runtimes.onnxruntime.runner import OnnxBackend

    return OnnxBackend(path, threads=1, providers=["CPUExecutionProvider"])


def test_the_edge_scores_a_classifier_as_training_did(trained, release):
    """Same preprocessing, same metric function: ONNX Runtime on the test split gives the top-1,
    per-class recall and confusion training wrote into test_metrics.json for best.pt (training feeds
    float16-stored inputs, so one borderline image may flip)."""
    run, onnx_path, summary = trained
    backend = _onnx(onnx_path)
    assert backend.metadata["class_table"][2]["name"] == "drill hole"  # the class map's, not terrain
    assert backend.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3)
    test = open_labelled(release, "test")
    scores = score(backend, test)
    trained_on = json.loads((run / "test_metrics.json").read_text())["metrics"]
    m = scores.metrics
    assert scores.task == "classification" and scores.headline[0] == "top-1"
    assert abs(m["top1"] - trained_on["top1"]) <= 1 / len(test) + 1e-9
    assert sum(m["support"].values()) == 15 and m["support"] == trained_on["support"]
    assert np.abs(np.array(m["confusion"]) - np.array(trained_on["confusion"])).sum() <= 2
    # the "masks" are one class id per image: agreement with itself is 1, with a shifted copy less
    assert scores.agreement(scores) == 1.0
    assert all(mask.shape == (1,) for mask in scores.masks.values())


class _FixedLogits:
    """A classifier backend whose logits depend on the image's mean only (hand-computed below)."""

    metadata = {"model_config": {"head": "classifier"},
                "class_table": [{"id": i, "name": f"c{i}"} for i in range(6)]}
    spec = SimpleNamespace(height=4, width=4, channels=1, gain=1.0)

    def infer(self, batch):  # noqa: D102 - test double
        return self.logits[int(round(float(batch.mean()) * 10))][None]


def test_score_images_top1_top5_balanced_by_hand(monkeypatch):
    import marsedge.edge.predict as P

    # image mean m -> logits row m; truth per image; ranks chosen so top-1 and top-5 differ
    rows = np.array([
        [9, 1, 2, 3, 4, 5],   # truth 0: top-1 right
        [0, 1, 2, 3, 4, 9],   # truth 1: top-1 wrong (5), top-5 right (1 is 5th of 6)
        [9, 0, 8, 7, 6, 5],   # truth 1: top-1 wrong, 1 is last: top-5 wrong
        [0, 0, 9, 0, 0, 0],   # truth 2: right
    ], np.float32)
    backend = _FixedLogits()
    backend.logits = rows
    monkeypatch.setattr(P, "preprocess", lambda image, spec: image.astype(np.float32))
    samples = [SimpleNamespace(image=np.full((4, 4), i / 10, np.float32), label=t, name=f"f{i}")
               for i, t in enumerate([0, 1, 1, 2])]
    m = score_images(backend, samples, [f"c{i}" for i in range(6)]).metrics
    assert m["top1"] == pytest.approx(2 / 4) and m["top5"] == pytest.approx(3 / 4)
    # recall: c0 1/1, c1 0/2, c2 1/1; classes without images are NaN and left out of the mean
    assert m["recall"]["c1"] == 0.0 and np.isnan(m["recall"]["c4"])
    assert m["balanced_accuracy"] == pytest.approx((1 + 0 + 1) / 3)
    assert m["confusion"][1][5] == 1 and m["confusion"][1][0] == 1


def test_a_classifier_and_a_segmentation_model_refuse_each_others_labels(trained, tiny_ai4mars):
    backend = _onnx(trained[1])
    with pytest.raises(DataError, match="has no class label"):
        score(backend, open_labelled(tiny_ai4mars, "gold-min3"))
    mask_model = SimpleNamespace(metadata={"model_config": {}, "class_table": [{"id": 0, "name": "soil"}]})
    with pytest.raises(DataError, match="has a class id, not a label mask"):
        score(mask_model, [SimpleNamespace(image=np.zeros((4, 4)), label=1, name="x.jpg")])


def test_quantize_gates_a_classifier_on_top1(trained, release, tmp_path):
    from marsedge.deploy.quantize import QuantizeOptions, quantize_model

    fp32 = _onnx(trained[1])
    val_top1 = score(fp32, open_labelled(release, "val")).metrics["top1"]
    options = QuantizeOptions(n=36, min_frames=8, tolerance=1.0, min_speedup=0, recipe="qdq-u8s8",
                              progress=False)
    with pytest.warns(UserWarning, match="calibrating on 36 frames"):
        out, record = quantize_model(trained[1], str(release), tmp_path / "cls.int8.onnx", None, options)
    gate = record["gate"]
    assert gate["metric"] == "top1" and "(val, 12 frames)" in gate["eval"]
    assert gate["top1_fp32"] == pytest.approx(val_top1, abs=1e-5)
    assert gate["drop"] == pytest.approx(gate["top1_fp32"] - gate["top1_int8"], abs=1e-4)
    assert set(gate["recall_drop"]) == set(CLASSES) and 0 <= gate["top1_agreement"] <= 1
    assert record["calibration"]["source"].endswith("(train)")  # v2.1 publishes val apart from train
    int8 = _onnx(out)
    assert int8.precision == "int8" and int8.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3)


def test_quantize_refuses_calibration_images_from_the_gate_split(trained, release, tmp_path):
    from marsedge.deploy.quantize import QuantizeOptions, quantize_model

    options = QuantizeOptions(n=12, min_frames=8, tolerance=1.0, min_speedup=0, progress=False)
    with pytest.raises(DataError, match="in the evaluation split"), pytest.warns(UserWarning):
        quantize_model(trained[1], str(release), tmp_path / "x.onnx", None, options, calib_split="val")


def test_bench_and_report_a_classifier(trained, release, tmp_path):
    from marsedge.bench.report import write_report
    from marsedge.bench.runner import BenchSettings, run_bench

    settings = BenchSettings(data=str(release), split="test", warmup=1, iters=5, duration=None, threads=1)
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(Path(trained[1]).read_bytes())
    results = run_bench([str(trained[1]), str(copy)], settings, tmp_path / "bench")
    first, second = results["models"]
    assert first["status"] == second["status"] == "ok", (first.get("reason"), second.get("reason"))
    acc = first["accuracy"]
    direct = score(_onnx(trained[1]), open_labelled(release, "test")).metrics
    assert acc["task"] == "classification" and acc["metrics"]["top1"] == pytest.approx(direct["top1"])
    assert second["accuracy"]["agreement"]["value"] == 1.0  # top-1 agreement with the same model
    assert results["samples"] == []  # no mask strip for a classifier
    md, _ = write_report([results], [tmp_path / "bench" / "results.json"], tmp_path / "report")
    text = md.read_text()
    assert "| top-1 | top-5 | balanced acc |" in text and "mIoU" not in text.split("## Machine")[0]
    assert "| drill hole | 5 |" in text  # per-class recall rows name the test images of the class
    assert (tmp_path / "report" / "confusion-copy.onnx.png").is_file()


def test_edge_run_writes_each_frames_class(trained, release, tmp_path, capsys):
    from marsedge.edge.predict import classify
    from marsedge.edge.run import main

    images = sorted((release / "msl-labeled-data-set-v2.1" / "images").glob("07*.jpg"))
    out = tmp_path / "out"
    rc = main([str(images[0].parent / "07*.jpg"), str(out), "--model", str(trained[1]), "--threads", "1"])
    assert rc == 0 and "is an image classifier" in capsys.readouterr().err
    lines = [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == len(images) == 15 and not (out / "masks").exists()
    backend = _onnx(trained[1])
    from marsedge.data.frames import read_frame

    for line, path in zip(sorted(lines, key=lambda x: x["name"]), images, strict=True):
        probs = classify(backend, read_frame(path))
        assert line["class"] == CLASSES[int(np.argmax(probs))]
        assert line["p"] == pytest.approx(float(probs.max()), abs=1e-4)
        assert [t["class"] for t in line["top5"]][0] == line["class"] and len(line["top5"]) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_ok"] == 15 and summary["hazards"]["rules"] == {}
