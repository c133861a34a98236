"""The shape of the training packages (marsedge.train, marsedge.ssl, marsedge.distill): no import
cycle, small modules, every mode registered with its config, and the lifecycle `run_job` promises
(prepare, then the seed, then build, fit, finish) for a mode defined outside the package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from layout_support import names_imported
from torch import nn
from torch.utils.data import Dataset

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("train", "ssl", "distill")


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the three packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / "marsedge" / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def import_time_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports at module level (top-level statements, `if` blocks
    included, TYPE_CHECKING ones too: a type-only import loop is still a loop; not function bodies);
    `from pkg import mod` counts as importing `pkg.mod`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            found.update(names_imported(node, package))
            if isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in known and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_training_modules():
    mods = modules()
    graph = {name: import_time_imports(name, path, set(mods)) for name, path in mods.items()}
    assert graph["marsedge.train.engine.loop"] >= {"marsedge.train.engine.checkpointing",
                                                   "marsedge.train.engine.state"}  # the parser sees imports
    assert "marsedge.train.engine.loop" not in graph["marsedge.train.engine.checkpointing"]
    assert find_cycle(graph) is None


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_first_in_a_fresh_interpreter(order):
    """Each module imported in a fresh interpreter, in sorted and in reverse order: a cycle that only
    works from one entry point fails one of the two."""
    names = sorted(modules())
    if order == "reversed":
        names.reverse()
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    done = subprocess.run([sys.executable, "-c", code, *names], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_modules_stay_small():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_every_mode_is_registered_with_its_config():
    from marsedge.distill.config import DistillConfig
    from marsedge.errors import ConfigError
    from marsedge.train.config import TrainConfig
    from marsedge.train.modes import resolve_mode
    from marsedge.train.modes.classify import ClassifyConfig
    from marsedge.train.modes.classify_linear import ClassifyLinearConfig
    from marsedge.train.modes.linear_eval import LinearEvalConfig
    from marsedge.train.modes.pretrain import PretrainConfig
    from marsedge.train.modes.semisup import SemisupConfig

    expected = {"finetune": TrainConfig, "pretrain": PretrainConfig, "semisup": SemisupConfig,
                "linear_eval": LinearEvalConfig, "distill": DistillConfig, "classify": ClassifyConfig,
                "classify_linear": ClassifyLinearConfig}
    for name, config in expected.items():
        assert resolve_mode(name).config is config
    with pytest.raises(ConfigError, match="'mode'.*valid: classify, classify_linear, distill, finetune"):
        resolve_mode("finetuen")
    cli = (REPO / "marsedge" / "train" / "cli.py").read_text()
    assert not any(f"modes.{name}" in cli for name in expected)  # the command names no mode module


class _Points(Dataset):
    def __init__(self) -> None:
        self.x = torch.linspace(-1, 1, 16)[:, None]

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": 3 * self.x[i]}


def _objective(model, batch, state):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean(), {}


def test_run_job_seeds_between_prepare_and_build(tmp_path):
    from marsedge.train.config import TrainConfig
    from marsedge.train.engine.job import MODES, FitPlan, Job, register_mode

    calls: list[str] = []

    @register_mode("toy_regression", TrainConfig)
    class Toy(Job):
        def prepare(self) -> None:
            calls.append("prepare")
            torch.rand(100)  # e.g. a teacher's random init: must not shift the trained model's init

        def build(self) -> FitPlan:
            calls.append("build")
            self.model = nn.Linear(1, 1)
            self.initial = self.model.weight.detach().clone()
            return FitPlan(self.model, _objective, _Points())

        def banner(self) -> str:
            calls.append("banner")
            return "toy"

        def finish(self, summary: dict) -> dict:
            calls.append("finish")
            return {**summary, "initial": self.initial}

    try:
        with pytest.raises(ValueError, match="registered twice"):
            register_mode("toy_regression")(type("Other", (Job,), {}))
        cfg = TrainConfig(name="toy", mode="toy_regression", seed=5, epochs=2, batch_size=4, num_workers=0)
        cfg.run.out_dir, cfg.run.device, cfg.run.progress = str(tmp_path), "cpu", False
        summary = MODES["toy_regression"].run(cfg)
    finally:
        MODES.pop("toy_regression", None)
    assert calls == ["prepare", "build", "banner", "finish"]
    torch.manual_seed(5)
    assert torch.equal(summary["initial"], nn.Linear(1, 1).weight.detach())
    assert summary["step"] == 8 and (tmp_path / "toy" / "best.pt").is_file()
