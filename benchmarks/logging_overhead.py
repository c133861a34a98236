#!/usr/bin/env python
"""What watching a run costs: progress lines and TensorBoard on the demo teacher, as a share of the
training step, measured inside one run.

    python -m benchmarks.logging_overhead                  # a line + TensorBoard scalars every step
    python -m benchmarks.logging_overhead --log-every 5    # the demo config's cadence

One finetune run of configs/demo/teacher.yaml (r18_0.5x_sk0 + DeepLabv3, batch 8 at 128 px, fp32
unless `run.amp: auto` finds native bf16) on a synthetic MSL tree, with `run.progress: true` (the
lines go to a file, as under `python train.py ... > train.log`), `run.tensorboard: true` and an
evaluation every `--eval-every` epochs. The loop's Watch (marsedge.train.engine.watch) times its own
work in every log window (the window's line, formatted and printed; the TensorBoard scalars) and
the training time (forward, backward, optimiser step, loader waits); their ratio is the per-step
overhead (`timing.logging_share` of runs/<name>/summary.json; the aim: under 2 %). The jsonl/csv
records are not counted: they are the run's record with or without watching. The views after each
evaluation (its line, TensorBoard confusion image and overlays, curves.png) are reported against
the evaluations' own time.

Writes benchmarks/results/logging_overhead.json and .md. Timings need an idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (
    DEMO_TEACHER,
    RESULTS,
    command,
    machine,
    run_config,
    synthetic_tree,
    write_result,
)
from marsedge.train.config import load_train_config
from marsedge.train.modes import resolve_mode


def measure(work: Path, data: Path, steps: int, log_every: int, eval_every: int, device: str) -> dict:
    mode = resolve_mode("finetune")
    overrides = [f"data.root={data}", f"run.out_dir={work}", "name=logging_overhead",
                 f"run.max_steps={steps}", f"run.log_every={log_every}", f"run.eval_every={eval_every}",
                 "run.progress=true", "run.tensorboard=true", f"run.device={device}"]
    cfg = load_train_config(mode.config, DEMO_TEACHER, overrides)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "train.log"
    with log.open("w") as out, contextlib.redirect_stdout(out):  # not a terminal: the plain lines
        run_config(cfg)
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    timing = summary["timing"]
    lines = log.read_text().splitlines()
    spec = cfg.data.preprocess
    return {
        "model": f"{cfg.model.backbone} + {cfg.model.head}", "batch": cfg.batch_size,
        "input": f"{spec.channels} x {spec.height} x {spec.width}",
        "device": summary["device"], "steps": summary["steps"], "log_every": log_every,
        "progress_lines": sum(line.startswith(f"[{cfg.name}] step ") for line in lines),
        "evaluations": sum(line.startswith(f"[{cfg.name}] eval ") for line in lines),
        "images_per_s": timing["images_per_s"], "train_time_s": timing["train_time_s"],
        "logging_share": timing["logging_share"],
        "eval_time_s": timing["eval_time_s"], "views_time_s": timing["views_time_s"],
    }


def write(results: dict) -> None:
    r = results["run"]
    views = r["views_time_s"] / r["eval_time_s"] if r["eval_time_s"] else float("nan")
    text = "\n".join([
        "# Logging overhead (progress lines + TensorBoard)", "",
        f"`{results['command']}`", "",
        f"{results['cpu']}, torch {results['torch']}, {results['cpu_threads']} CPU threads, device "
        f"{r['device']}; {r['model']}, batch {r['batch']} x {r['input']}", "",
        "| measure | value |", "|---|---|",
        f"| optimiser steps (lines: every {r['log_every']}) | {r['steps']} ({r['progress_lines']} lines) |",
        f"| training throughput | {r['images_per_s']:.1f} img/s |",
        f"| per-step overhead: progress + TensorBoard / training time | {100 * r['logging_share']:.3f} % |",
        f"| evaluations: their views (line, TensorBoard images, curves.png) / evaluation time | "
        f"{100 * views:.1f} % ({r['evaluations']} evaluations) |",
    ]) + "\n"
    write_result(RESULTS / "logging_overhead", results, text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="optimiser steps (batch 8)")
    parser.add_argument("--log-every", type=int, default=1, help="run.log_every (1: the worst case)")
    parser.add_argument("--eval-every", type=int, default=5, help="run.eval_every (epochs)")
    parser.add_argument("--frames", type=int, default=48, help="synthetic MSL frames (256 px)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    args = parser.parse_args()
    line = command("logging_overhead", [
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v != parser.get_default(k)])
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_tree(Path(tmp) / "data", args.frames, 256)
        run = measure(Path(tmp) / "runs", data, args.steps, args.log_every, args.eval_every, args.device)
    write({"command": line, "host": platform.node(), "cpu": machine()["cpu"], "torch": torch.__version__,
           "cpu_threads": torch.get_num_threads(), "run": run})


if __name__ == "__main__":
    main()
