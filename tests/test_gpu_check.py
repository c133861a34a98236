"""scripts/gpu_check.py on a machine without a GPU: the one-line exit, the skip logic, the budget
and failure handling of the step runner, and the report writer (the GPU steps themselves need a GPU)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def test_no_gpu_is_one_line_and_exit_0(gc):
    if gc.gpu_name() is not None:
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1 and "no NVIDIA GPU" in done.stdout
    assert done.stderr == ""


def test_the_steps_fit_eight_minutes_and_name_their_libraries(gc):
    steps = gc.STEPS.values()
    assert sum(s.budget_s for s in steps) <= gc.TOTAL_BUDGET_S == 480
    wanted = {"teacher", "ddp_resume", "tensorrt_build", "rebuild_stale", "edge_run_engines", "bench"}
    assert wanted <= set(gc.STEPS)
    assert "tensorrt" in gc.STEPS["tensorrt_build"].needs
    assert "modelopt" in gc.STEPS["quantize_tensorrt"].needs


def test_a_missing_library_is_a_skip_naming_it(gc, monkeypatch):
    assert gc.missing(("no_such_module_xyz",)) == "skipped: no_such_module_xyz not importable"
    assert gc.missing(("json",)) is None

    def broken() -> bool:
        raise RuntimeError("CUDA driver too old")

    monkeypatch.setitem(gc.PROBES, "onnxruntime-cuda", ("onnxruntime CUDA provider", "json", broken))
    assert gc.missing(("json", "onnxruntime-cuda")) == "skipped: onnxruntime CUDA provider not importable"
    monkeypatch.setitem(gc.PROBES, "tensorrt", ("tensorrt", "no_such_module_xyz", None))
    assert gc.missing(("tensorrt",)) == "skipped: tensorrt not importable"


def test_runner_skips_fails_and_goes_on(gc, tmp_path):
    called = []

    def ok(ctx):
        called.append("ok")
        ctx.artifacts["thing"] = 1
        return {"figure": 2}

    def never(ctx):
        called.append("never")
        return {}

    def needs_other(ctx):
        ctx.need("engines")

    def fails(ctx):
        raise gc.StepFailed("broken\nsecond line")

    def slow(ctx):
        time.sleep(0.05)
        return {}

    steps = [gc.Step("ok", ok, 10, ()), gc.Step("lib", never, 10, ("no_such_module_xyz",)),
             gc.Step("dep", needs_other, 10, ()), gc.Step("fails", fails, 10, ()),
             gc.Step("slow", slow, 0.01, ())]
    results = {r["step"]: r for r in gc.run_steps(steps, gc.Context(work=tmp_path))}
    assert called == ["ok"]
    assert results["ok"]["status"] == "ok" and results["ok"]["figures"] == {"figure": 2}
    assert results["lib"] == {"step": "lib", "budget_s": 10, "status": "skipped",
                              "detail": "skipped: no_such_module_xyz not importable", "seconds": 0.0}
    assert results["dep"]["status"] == "skipped" and "needs engines" in results["dep"]["detail"]
    assert results["fails"]["status"] == "failed" and results["fails"]["detail"] == "StepFailed: broken"
    assert results["slow"]["status"] == "failed" and "budget" in results["slow"]["detail"]


def test_commands_stop_at_the_budget_and_failures_are_one_line(gc, tmp_path):
    ctx = gc.Context(work=tmp_path, budget_s=1.0, started=time.perf_counter())
    with pytest.raises(gc.StepFailed, match="over its budget of 1 s"):
        ctx.sh(sys.executable, "-c", "import time; time.sleep(10)")
    ctx.started = time.perf_counter()
    with pytest.raises(gc.StepFailed, match="exited 3: last words"):
        ctx.sh(sys.executable, "-c", "import sys; print('first', file=sys.stderr); "
               "print('last words', file=sys.stderr); sys.exit(3)")


def test_report_json_and_md(gc, tmp_path):
    results = [{"step": "data", "budget_s": 25, "status": "ok", "seconds": 3.2, "figures": {"frames": 240}},
               {"step": "tensorrt_build", "budget_s": 60, "status": "skipped", "seconds": 0.0,
                "detail": "skipped: tensorrt not importable"},
               {"step": "bench", "budget_s": 35, "status": "failed", "seconds": 4.0,
                "detail": "exited 1: a | b"}]
    env = {"libraries": {"torch": "2.13.0"}}
    json_path, md_path = gc.write_report(results, "NVIDIA H200", env, tmp_path / "gpu")
    assert json_path.name == "NVIDIA-H200.json" and md_path.name == "NVIDIA-H200.md"
    data = json.loads(json_path.read_text())
    assert data["passed"] is False and data["total_seconds"] == 7.2 and data["steps"] == results
    md = md_path.read_text()
    assert "FAILED" in md and "| data | ok | 3.2 | 25 | frames 240 |" in md
    assert "| tensorrt_build | skipped | 0.0 | 60 | skipped: tensorrt not importable |" in md
    assert "exited 1: a / b" in md and "torch 2.13.0" in md
    _, md_path = gc.write_report(results[:2], "NVIDIA H200", env, tmp_path / "gpu")
    assert md_path.read_text().splitlines()[2].startswith("passed")
