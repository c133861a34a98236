"""Which runtime a `marsedge quantize --target cpu` model runs on: chosen by measuring, recorded in it.

Each CPU runtime installed here (`marsedge.runtimes`: ONNX Runtime always, the others where their
extra is installed) brings its own INT8 layouts (`auto_recipes`: ONNX Runtime's QOperator and QDQ
recipes, a QDQ-native runtime's QDQ ones), so a candidate is a (recipe, runtime) pair: one QDQ file
may be a candidate on several runtimes. Every candidate is gated on the runtime it would run on,
against the FP32 model scored on that same runtime; FP32 on each runtime and every candidate are
timed together in one alternating-block run (`marsedge.timing`); the fastest candidate that passes is
kept, and its runtime is written into the file (`marsedge.runtime`), which `open_backend` follows.
`--runtime NAME` narrows the candidates to one runtime; where no other CPU runtime is installed, only
ONNX Runtime's are made, gated and timed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marsedge.deploy import gate as G
from marsedge.deploy.quantizers import CPU_TARGET
from marsedge.runtimes import DEFAULT_CPU_RUNTIME, RUNTIMES, cpu_quantize_runtimes


def quantize_runtimes(target: str, runtime: str) -> tuple[str, ...]:
    """The runtimes quantize gates (and, for the CPU target, times) candidates on: for `--target cpu`
    `--runtime` or, for auto, every installed CPU runtime, the default last; for other targets the
    gate's ONNX Runtime CPU (the file is made for another runtime, a GPU one)."""
    if target != CPU_TARGET:
        return (DEFAULT_CPU_RUNTIME,)
    return cpu_quantize_runtimes() if runtime == "auto" else (runtime,)


def plan(target: str, runtime: str, recipe: str, target_auto: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (recipe, runtime) candidates, in the order they are tried: per runtime, its auto recipes
    (`--recipe auto`) or the one recipe asked, on every runtime that loads it."""
    runtimes = quantize_runtimes(target, runtime)
    if target != CPU_TARGET:
        return [(r, runtimes[0]) for r in ((recipe,) if recipe != "auto" else target_auto)]
    if recipe != "auto":
        return [(recipe, rt) for rt in runtimes if RUNTIMES[rt].loads(recipe)]
    return [(r, rt) for rt in runtimes for r in RUNTIMES[rt].auto_recipes]


def label(recipe: str, runtime: str) -> str:
    """A candidate's name where several runtimes compete (bench's MODEL@BACKEND spelling)."""
    return f"{recipe}@{runtime}"


def measure_and_gate(src: Path, made: dict[str, Path], candidates: list[tuple[str, str]], references: dict,
                     tolerance: float, threads: int | None, frame: np.ndarray | None
                     ) -> tuple[list[dict], dict[str, float] | None]:
    """Time (when `frame` is given) FP32 on each runtime of `references` and every candidate, in one
    alternating-block run, then gate each candidate on its runtime. Returns the tried records
    (recipe, runtime, drop, passed, gate, and ms and speed-up against FP32 on the same runtime) and
    the FP32 medians by runtime (None when nothing was timed)."""
    ms = None
    if frame is not None:
        models = {label("fp32", rt): (src, rt) for rt in references}
        models |= {label(recipe, rt): (made[recipe], rt) for recipe, rt in candidates}
        ms = G.latency_medians(models, frame, threads)
    tried = []
    for recipe, rt in candidates:
        gate = G.accuracy_gate(references[rt], made[recipe], tolerance, threads, rt)
        entry = {"recipe": recipe, "runtime": rt, "drop": gate["drop"], "passed": gate["passed"],
                 "gate": gate}
        if ms:
            key = label(recipe, rt)
            entry |= {"ms": round(ms[key], 2), "speedup": round(ms[label("fp32", rt)] / ms[key], 3)}
        tried.append(entry)
    fp32 = {rt: round(ms[label("fp32", rt)], 2) for rt in references} if ms else None
    return tried, fp32


def pick(tried: list[dict], measured: bool) -> dict:
    """The fastest candidate passing the accuracy gate (the first, where nothing was timed); when
    none passes, the last tried (the default runtime's recipe keeping the most layers FP32)."""
    passing = [t for t in tried if t["passed"]]
    if not passing:
        return tried[-1]
    return min(passing, key=lambda t: t["ms"]) if measured else passing[0]


def summary(chosen: dict, tried: list[dict], fp32_ms: dict[str, float] | None) -> list[str]:
    """The quantize summary's lines on the runtime: which, and why (the timings, the gates). Nothing
    where one runtime was the only candidate."""
    runtimes = list(dict.fromkeys(t["runtime"] for t in tried))
    if len(runtimes) < 2:
        return []
    name = label(chosen["recipe"], chosen["runtime"])
    if not chosen["passed"]:
        why = "no candidate passed the accuracy gate; the default runtime's most conservative recipe is kept"
    elif "ms" not in chosen:
        why = "the first candidate passing the accuracy gate (nothing timed)"
    else:
        why = f"{name} is the fastest candidate passing the accuracy gate, {chosen['ms']:.1f} ms"
        for rt in runtimes:
            if rt == chosen["runtime"]:
                continue
            passing = [t for t in tried if t["runtime"] == rt and t["passed"]]
            if passing:
                best = min(passing, key=lambda t: t["ms"])
                why += (f"; best on {rt}: {best['recipe']} {best['ms']:.1f} ms "
                        f"({best['ms'] / chosen['ms']:.2f}x the time)")
            else:
                why += f"; nothing on {rt} passed the gate"
    lines = [f"runtime: {chosen['runtime']} ({why})"]
    if fp32_ms:
        lines.append("FP32 on each runtime: " + ", ".join(f"{rt} {v:.1f} ms" for rt, v in fp32_ms.items()))
    lines.append(f"recorded in the model (marsedge.runtime = {chosen['runtime']}): edge-run and bench run it "
                 "there; --backend overrides")
    return lines
