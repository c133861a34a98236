"""`marsedge bench` end to end on the tiny AI4Mars tree with real ONNX Runtime models in child processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from bench_support import BIASES, WEIGHTS, numpy_logits, write_tiny_onnx

from marsedge.bench import results as R
from marsedge.bench.runner import BenchSettings, pick_sample_frames, run_bench
from marsedge.cli import main
from marsedge.data.ai4mars import AI4MarsDataset
from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.edge.predict import logits_to_mask
from marsedge.metrics import ConfusionMatrix

SIZE = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    reference = write_tiny_onnx(folder / "ref.onnx", SIZE)
    # same architecture (model_config), other weights: it disagrees with the reference on many pixels
    other = write_tiny_onnx(folder / "other.onnx", SIZE, weights=WEIGHTS[::-1].copy(),
                            biases=BIASES[::-1].copy())
    corrupt = folder / "corrupt.onnx"
    corrupt.write_bytes(b"this is not an onnx model")
    return {"ref": reference, "other": other, "corrupt": corrupt, "missing": folder / "missing.onnx"}


@pytest.fixture(scope="module")
def run(models, tiny_ai4mars, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    settings = BenchSettings(data=str(tiny_ai4mars), split="gold-min3", warmup=2, iters=12, duration=None,
                             threads=1, samples=3, timeout=300)
    paths = [str(models[k]) for k in ("ref", "corrupt", "other", "missing")]
    return run_bench(paths, settings, out), out


def test_rows_keep_order_and_status(run):
    results, _ = run
    rows = {r["id"]: r for r in results["models"]}
    assert [r["id"] for r in results["models"]] == ["ref.onnx", "corrupt.onnx", "other.onnx", "missing.onnx"]
    assert rows["ref.onnx"]["status"] == R.STATUS_OK and rows["ref.onnx"]["accuracy"]["agreement"] is None
    assert rows["corrupt.onnx"]["status"] == R.STATUS_FAILED
    assert "corrupt.onnx" in rows["corrupt.onnx"]["reason"]  # the one-line reason names the file
    assert rows["missing.onnx"]["status"] == R.STATUS_FAILED and "not found" in rows["missing.onnx"]["reason"]
    other = rows["other.onnx"]  # a model after a failed one still ran
    # low pixel agreement with the reference is information, not a verdict: both are FP32 models
    assert other["status"] == R.STATUS_OK and "int8_verdict" not in other
    agreement = other["accuracy"]["agreement"]
    assert agreement == {"reference": "ref.onnx", "value": agreement["value"]} and agreement["value"] < 0.95


def test_accuracy_matches_numpy_on_the_same_frames(run, tiny_ai4mars):
    results, _ = run
    row = next(r for r in results["models"] if r["id"] == "ref.onnx")
    spec = PreprocessSpec(SIZE, SIZE, 1, 1.5)
    expected = ConfusionMatrix(6)
    dataset = AI4MarsDataset(tiny_ai4mars, "gold-min3")
    for sample in dataset:
        logits = numpy_logits(preprocess(sample.image, spec)[None])
        expected.update(logits_to_mask(logits, sample.label.shape), sample.label)
    # numpy and ONNX Runtime may differ on a pixel sitting exactly on a decision boundary, no more
    got = np.array(row["accuracy"]["confusion"])
    assert got.sum() == expected.matrix.sum() > 0
    assert np.abs(got - expected.matrix).sum() <= 0.001 * got.sum()
    assert len(row["accuracy"]["per_frame"]) == len(dataset)


def test_latency_memory_and_size_are_recorded(run):
    results, _ = run
    row = next(r for r in results["models"] if r["id"] == "ref.onnx")
    lat = row["latency"]
    assert lat["iters"] == 12 and lat["warmup"] == 2
    e2e = lat["end_to_end"]
    assert 0 < e2e["min"] <= e2e["p50"] <= e2e["p90"] <= e2e["p99"] <= e2e["max"]
    assert e2e["p50"] >= lat["backend_only"]["p50"] > 0
    mem = row["memory"]
    assert mem["rss_peak_mb"] >= mem["rss_baseline_mb"] > 10
    assert row["params"] == 12  # 6x1x1x1 weights + 6 biases
    assert row["macs"] == 6 * SIZE * SIZE
    assert row["input"] == [1, SIZE, SIZE] and row["backend"] == "onnxruntime" and row["precision"] == "fp32"
    assert results["environment"]["cpu_count"] >= 1 and "onnxruntime" in results["environment"]["libraries"]


def test_sample_strip_shows_the_worst_frame(run):
    results, out = run
    rows = [r for r in results["models"] if r.get("accuracy")]
    picks = pick_sample_frames(rows, 3)
    assert [s["name"] for s in results["samples"]] == [name for name, _ in picks]
    scores = {}
    for r in rows:
        for f in r["accuracy"]["per_frame"]:
            if f["miou"] is not None:
                scores.setdefault(f["name"], []).append(f["miou"])
    worst = min(scores, key=lambda n: (np.mean(scores[n]), n))
    assert results["samples"][0] == {"name": worst, "why": "worst", "image": results["samples"][0]["image"]}
    for sample in results["samples"]:
        assert (out / sample["image"]).read_bytes()[:4] == b"\x89PNG"
    assert not (out / ".masks").exists()  # the masks are scratch, removed after the run


def test_results_file_round_trips_and_report_is_written(run):
    results, out = run
    assert R.load_results(out / "results.json") == json.loads(json.dumps(results))


def test_cli_bench_then_report(models, tiny_ai4mars, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", str(models["ref"]), str(models["corrupt"]), "--data", str(tiny_ai4mars),
                 "--iters", "3", "--warmup", "1", "--samples", "2", "-o", str(out)])
    assert code == 1  # a model could not run: reported, and the exit code says so
    printed = capsys.readouterr().out
    assert "ref.onnx" in printed and "failed" in printed
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    results = str(out / "results.json")
    assert main(["report", results, results, "-o", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "Comparison with" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert any(link.startswith("samples/") for link in links)  # the strip came along from the run folder
    assert all((tmp_path / "rep" / link).is_file() for link in links)
    # without a baseline, report only re-renders, and never over what bench wrote unless asked
    written = (out / "report.md").read_bytes()
    assert main(["report", results, "-o", str(out)]) == 2
    assert "report.md: report exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "report.md").read_bytes() == written
    assert main(["report", results, "-o", str(out), "--overwrite"]) == 0
    assert "no baseline given: re-rendering" in capsys.readouterr().out


def test_bench_imports_no_torch():
    code = ("import sys, marsedge.bench.runner, marsedge.bench.report, marsedge.bench.cli, "
            "marsedge.bench.browser; sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_torch_checkpoint_row(tiny_ai4mars, tmp_path):
    torch = pytest.importorskip("torch")
    from marsedge.models.build import ModelConfig, build_model, count_parameters
    from marsedge.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(backbone="mnv2_0.35", head="deeplabv3plus", head_channels=16)
    model = build_model(config).eval()
    checkpoint = save_checkpoint(tmp_path / "student.pt", model, config, PreprocessSpec(SIZE, SIZE).to_dict())
    settings = BenchSettings(data=str(tiny_ai4mars), warmup=1, iters=3, duration=None, threads=1, samples=1)
    row = run_bench([str(checkpoint)], settings, tmp_path / "out")["models"][0]
    assert row["status"] == R.STATUS_OK, row["reason"]
    assert (row["backend"], row["precision"]) == ("torch", "fp32")
    assert row["params"] == count_parameters(model)
    assert row["macs"] > row["params"]  # a conv net reuses each weight at many pixels
    assert row["model_config"]["backbone"] == "mnv2_0.35"


def test_reference_is_the_first_model_of_the_same_architecture_unless_named():
    from marsedge.bench.runner import choose_reference

    def row(model_id, backbone):
        r = R.empty_row(model_id, f"/m/{model_id}")
        r.update(model_config={"backbone": backbone}, accuracy={"per_frame": []}, status=R.STATUS_OK)
        return r

    rows = [row("teacher.pt", "r50"), row("teacher.onnx", "r50"), row("student.pt", "mnv2"),
            row("student.onnx", "mnv2"), row("student.int8.onnx", "mnv2")]
    refs = [choose_reference(r, rows, None) for r in rows]
    assert [ref and ref["id"] for ref in refs] == [None, "teacher.pt", None, "student.pt", "student.pt"]
    named = [choose_reference(r, rows, "teacher.pt") for r in rows]
    assert [ref and ref["id"] for ref in named] == [None] + ["teacher.pt"] * 4


def test_unknown_reference_is_refused_before_running(models, tiny_ai4mars, tmp_path):
    from marsedge.errors import ConfigError

    settings = BenchSettings(data=str(tiny_ai4mars), reference="nope.onnx")
    with pytest.raises(ConfigError, match="nope.onnx"):
        run_bench([str(models["ref"])], settings, tmp_path)


def test_a_model_past_its_timeout_becomes_a_failed_row(models, tiny_ai4mars, tmp_path):
    from marsedge.bench.runner import run_isolated

    settings = BenchSettings(data=str(tiny_ai4mars), warmup=0, iters=None, duration=60.0, timeout=1.0)
    row = run_isolated(str(models["ref"]), "ref.onnx", settings, str(tmp_path / "ref.npz"))
    assert row["status"] == R.STATUS_FAILED and row["reason"] == "timed out after 1 s"
