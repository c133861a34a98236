"""results.json as untrusted input: validated once on load (a wrong type, a null or empty model list,
a non-finite figure: one DataError naming the file and key), fuzzed; and two runs are compared only
when they were benched on the same split."""

from __future__ import annotations

import copy
import json

import pytest
from bench_support import confusion, results_file, results_row
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marsedge.bench import results as R
from marsedge.bench.cli import summary_lines
from marsedge.bench.compare import compare_runs
from marsedge.cli import main
from marsedge.errors import DataError


@pytest.fixture(scope="module")
def valid() -> dict:
    return results_file([results_row("student.onnx", 10.0, confusion(0.7, 2), seed=2),
                         R.failed_row("broken.onnx", "/m/broken.onnx", "ModelError: cannot load")])


def write(tmp_path, results, name="results.json"):
    path = tmp_path / name
    path.write_text(json.dumps(results))
    return path


@pytest.mark.parametrize("change, key", [
    (lambda r: r.update(models=None), "models must be a list, got null"),
    (lambda r: r.update(models=[]), "models is empty"),
    (lambda r: r["models"][0]["latency"]["end_to_end"].update(p50="fast"),
     "models[0].latency.end_to_end.p50 must be a number, got a string"),
    (lambda r: r["models"][0]["accuracy"]["metrics"].update(miou=float("nan")),
     "models[0].accuracy.metrics.miou is nan, not a finite number"),
    (lambda r: r["models"][0].update(size_bytes=float("inf")), "models[0].size_bytes is inf"),
    (lambda r: r["models"][1].update(id=7), "models[1].id must be a string, got a number"),
    (lambda r: r.update(samples={}), "samples must be a list"),
    (lambda r: r["dataset"].update(split=["gold-min3"]), "dataset.split must be a string, got a list"),
    (lambda r: r["dataset"].clear(), "dataset.root must be a string, got null"),
])
def test_a_malformed_results_file_is_one_line_naming_the_file_and_key(valid, tmp_path, capsys, change, key):
    broken = copy.deepcopy(valid)
    change(broken)
    path = write(tmp_path, broken)
    assert main(["report", str(path), "-o", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{path}: {key}" in err, err
    assert not (tmp_path / "report" / "report.md").exists()


def test_what_bench_writes_loads(valid, tmp_path):
    """Per-class NaN (a class the split lacks) and a classifier's metrics (top-1, a confusion list)."""
    results = copy.deepcopy(valid)
    results["models"][0]["accuracy"]["metrics"]["iou"]["rover"] = float("nan")
    R.load_results(write(tmp_path, results))
    results["models"][0]["accuracy"]["metrics"] = {"top1": 0.5, "recall": {"dust": float("nan")},
                                                   "confusion": [[1, 2], [3, 4]]}
    R.load_results(write(tmp_path, results))


def test_runs_on_different_splits_are_not_compared(valid, tmp_path, capsys):
    a, b = copy.deepcopy(valid), copy.deepcopy(valid)
    a["dataset"].update(split="gold-min3", frames=322)
    b["dataset"].update(split="gold-min1", frames=322)
    pa, pb = write(tmp_path, a, "a.json"), write(tmp_path, b, "b.json")
    assert main(["report", str(pb), str(pa), "-o", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "split gold-min1" in err and "split gold-min3" in err
    assert str(pa) in err and str(pb) in err and "REGRESSION" not in err
    assert not (tmp_path / "report" / "report.md").exists()
    b["dataset"]["split"] = "gold-min3"  # the same split: compared
    assert main(["report", str(write(tmp_path, b, "b.json")), str(pa), "-o", str(tmp_path / "report")]) == 0


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3),
                    max_leaves=8)


def _paths(tree, prefix=()):
    """Every (path) to a value inside a JSON tree."""
    yield prefix
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _loads_or_one_line(path) -> dict | None:
    try:
        return R.load_results(path)
    except DataError as exc:
        assert len(str(exc).splitlines()) == 1 and str(path) in str(exc)
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_any_json_loads_or_is_one_data_error(valid, tmp_path, data):
    """A valid file with one value anywhere replaced by any JSON (or any JSON at all): it loads and
    then reads as a report's summary and comparison, or it is one DataError naming the file."""
    results = copy.deepcopy(valid)
    if data.draw(st.booleans()):
        paths = list(_paths(results))
        where = data.draw(st.sampled_from(paths[1:]))
        parent = results
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = data.draw(JSON)
    else:
        results = data.draw(JSON)
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(results))
    loaded = _loads_or_one_line(path)
    if loaded is not None:
        summary_lines(loaded)
        compare_runs(loaded, loaded)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=64))
def test_fuzz_any_bytes_load_or_are_one_data_error(tmp_path, raw):
    path = tmp_path / "raw.json"
    path.write_bytes(raw)
    _loads_or_one_line(path)
