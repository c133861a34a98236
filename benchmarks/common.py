"""What the benchmarks share: training a config through train.py's own modes, a synthetic AI4Mars
tree, the machine a figure was measured on, and writing a result's json / md / png.

Run every benchmark from the repository root as a module (`python -m benchmarks.NAME`), so that
`marsedge` and the sibling benchmarks import without any path edits.

    from benchmarks.common import train, synthetic_tree, machine, write_result

- `train(work, name, config)`: the config written to WORK/configs/NAME.yaml (CPU, no progress bar
  unless the config says otherwise), run through its mode as `train.py` runs it; the loop's summary
  with its wall and CPU seconds. `run_config(cfg)` does the same for a config already loaded (a
  demo config with overrides). `finished_run` keeps a run's figures in runs/NAME/bench.json and
  reads them back, so an interrupted benchmark resumes where it stopped.
- `synthetic_tree(root, n, size, ...)`: `marsedge data synth` into ROOT (kept when it is there).
- `machine()`, `load_1min()`: the CPU model, cores and the 1-minute load average (a shared machine
  slows every figure: the load at start and end goes beside it).
- `write_result(stem, result, markdown, plot)`: STEM.json, STEM.md and (given a plot) STEM.png,
  each written atomically.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from marsedge.bench.environment import cpu_model
from marsedge.io import atomic_write, atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEMO_TEACHER = REPO / "configs" / "demo" / "teacher.yaml"
DEMO_STUDENT = REPO / "configs" / "demo" / "student.yaml"


# ---- the machine --------------------------------------------------------------------------------


def load_1min(digits: int = 2) -> float:
    """The 1-minute load average, rounded."""
    return round(os.getloadavg()[0], digits)


def cpu_described() -> str:
    """The CPU's model name with its family and model numbers: a VM may show only "AMD EPYC", and the
    numbers tell the generations apart (x86 /proc/cpuinfo; the name alone elsewhere)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines()[:30] if ":" in line)
    numbers = {k.strip(): v.strip() for k, v in fields.items() if k.strip() in ("cpu family", "model")}
    if len(numbers) < 2:
        return cpu_model()
    return f"{cpu_model()} (family {numbers['cpu family']} model {numbers['model']})"


def machine() -> dict:
    """The CPU model and the cores this process may use; `line` says both in words."""
    cpu, cores = cpu_described(), len(os.sched_getaffinity(0))
    return {"cpu": cpu, "cores": cores, "line": f"{cpu}, {cores} CPUs, no GPU"}


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the data loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def command(module: str, argv: list[str]) -> str:
    """The command line that reruns this benchmark, for its result files."""
    return " ".join(["python -m", f"benchmarks.{module}", *argv])


# ---- data ---------------------------------------------------------------------------------------


def synthetic_tree(root: Path, n: int, size: int, *, seed: int = 0, test_fraction: float = 0.1,
                   unlabelled: int = 0, workers: int | None = None, mission: str = "msl",
                   progress: bool = False) -> Path:
    """A synthetic AI4Mars tree (`marsedge data synth`) at ROOT; a tree already there is used as it is."""
    from marsedge.synthetic.navcam import SynthOptions, generate

    if not (root / mission).is_dir():
        generate(SynthOptions(str(root), mission, n=n, size=size, seed=seed, test_fraction=test_fraction,
                              unlabelled=unlabelled, workers=workers), progress=progress)
    return root


# ---- training -----------------------------------------------------------------------------------


def run_config(cfg, resume: bool = False) -> dict:
    """A loaded config (`load_train_config`) through its mode, as `train.py` runs it; the loop's
    summary plus `seconds` (wall) and `cpu_seconds`. A run stopped by a signal raises
    KeyboardInterrupt: its summary is no result."""
    from marsedge.train.modes import resolve_mode

    wall, cpu = time.perf_counter(), cpu_seconds()
    summary = resolve_mode(cfg.mode).run(cfg, resume=resume)
    if summary.get("interrupted"):
        raise KeyboardInterrupt
    summary["seconds"] = time.perf_counter() - wall
    summary["cpu_seconds"] = cpu_seconds() - cpu
    return summary


def train(work: Path, name: str, config: dict, *, resume: bool = False) -> dict:
    """Write CONFIG (plus `name` and CPU / no-progress run settings under its own `run`) to
    WORK/configs/NAME.yaml and `run_config` it; `resumed` says whether it continued a run. With
    `resume`, a run with a last.pt continues from it and a run folder without one (stopped before
    its first checkpoint) is started again."""
    import yaml

    from marsedge.train.config import load_train_config
    from marsedge.train.modes import resolve_mode

    run_dir = work / "runs" / name
    path = work / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {"out_dir": str(work / "runs"), "device": "cpu", "progress": False, **config.get("run", {})}
    path.write_text(yaml.safe_dump({**config, "name": name, "run": run}, sort_keys=False))
    cfg = load_train_config(resolve_mode(config["mode"]).config, path, [])
    again = resume and (run_dir / "last.pt").is_file()
    if resume and run_dir.exists() and not again:
        shutil.rmtree(run_dir)
    return {**run_config(cfg, again), "resumed": again}


def finished_run(work: Path, name: str, run: Callable[[], dict]) -> dict:
    """runs/NAME/bench.json under WORK when a finished run left one; else `run()`'s figures, kept
    there so that a rerun reads them back instead of training again."""
    done = work / "runs" / name / "bench.json"
    if done.is_file():
        return json.loads(done.read_text())
    figures = run()
    atomic_write_json(done, figures)
    return figures


# ---- results ------------------------------------------------------------------------------------


def write_result(stem: Path, result: dict, markdown: str,
                 plot: Callable[[dict, Path], None] | None = None) -> None:
    """STEM.json (every figure), STEM.md (the tables) and, given `plot(result, path)`, STEM.png."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stem.with_suffix(".json"), result)
    atomic_write_text(stem.with_suffix(".md"), markdown)
    if plot is not None:
        atomic_write(stem.with_suffix(".png"), lambda tmp: plot(result, Path(tmp)))
