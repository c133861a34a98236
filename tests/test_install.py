"""The install itself: one ONNX Runtime, a torch-free edge, a working console command."""

import importlib.metadata as md
import subprocess
import sys

import pytest


def test_exactly_one_onnxruntime_distribution():
    # nvidia-modelopt[onnx] would add onnxruntime-gpu beside onnxruntime; both own the same
    # `onnxruntime` import package, and the one installed last silently wins.
    names = {d.metadata["Name"].lower() for d in md.distributions()}
    runtimes = sorted(n for n in names if n.startswith("onnxruntime"))
    assert runtimes == ["onnxruntime"], runtimes


@pytest.mark.parametrize("module", ["marsedge.terrain", "marsedge.metrics", "marsedge.data.preprocess",
                                    "marsedge.cli"])
def test_torch_free_modules_do_not_import_torch(module):
    code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, f"{module} imported torch"


def test_building_the_cli_imports_no_torch():
    # `marsedge --help` registers every area's subcommands; the rover computer has no torch
    code = ("import sys; from marsedge.cli import build_parser; build_parser(); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_help_and_usage_error_exit_codes():
    ok = subprocess.run([sys.executable, "-m", "marsedge", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "COMMAND" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "marsedge", "no-such-command"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
