"""What machine a benchmark ran on: CPU, cores, threads, library versions, GPU and clocks.

A latency figure means little without the machine beside it, nor on a machine busy with other work
(the load average when the run started is kept, with a hint when it is high). On a Jetson the power
mode matters as much as the model, and unlocked clocks (DVFS) make latency wander, so both are
recorded with a hint.
Nothing here imports torch: versions come from package metadata, and from the runtimes whose
package says its own version (`version` in `marsedge.runtimes`: where the distribution's name is not
the module's, or there is no pip metadata at all).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from marsedge.runtimes import RUNTIMES

LIBRARIES = ("marsedge", "numpy", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu", "onnx",
             "torch", "polygraphy", "nvidia-modelopt")
GPU_FIELDS = ("name", "driver_version", "memory.total", "clocks.sm", "clocks.max.sm", "clocks.mem",
              "clocks.max.mem", "power.limit")


def capture(threads: int | None = None) -> dict:
    env = {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": threads,
        "load_average": load_average(),
        "libraries": library_versions(),
        "gpus": gpu_info(),
        "jetson": jetson_info(),
    }
    env["hints"] = clock_hints(env)
    return env


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def usable_cores(env: dict) -> int | None:
    """Cores this process may run on, from a `capture()` record."""
    return env.get("cpu_affinity") or env.get("cpu_count")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    for runtime in RUNTIMES.values():
        version = runtime.version() if runtime.version else None
        if version:
            versions[runtime.name] = version
    return versions


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return out.stdout.strip()


def gpu_info() -> list[dict]:
    """One dict per NVIDIA GPU from nvidia-smi (empty on machines without one)."""
    out = _run(["nvidia-smi", f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader,nounits"])
    if not out:
        return []
    return [dict(zip(GPU_FIELDS, (v.strip() for v in line.split(",")), strict=False))
            for line in out.splitlines()]


def jetson_info() -> dict | None:
    """Power mode and CPU clock governor on a Jetson (None elsewhere)."""
    release = Path("/etc/nv_tegra_release")
    if not release.exists():
        return None
    return {
        "l4t": release.read_text().splitlines()[0].strip(),
        "power_mode": _run(["nvpmodel", "-q"]),
        "governor": cpu_governor(),
    }


def cpu_governor() -> str | None:
    path = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    try:
        return path.read_text().strip()
    except OSError:
        return None


def clock_hints(env: dict) -> list[str]:
    """Plain-language warnings that the clocks may have moved during the run."""
    hints = []
    busy = load_hint(env.get("load_average"), usable_cores(env), "started")
    if busy:
        hints.append(busy)
    governor = cpu_governor()
    if governor and governor != "performance":
        hints.append(f"CPU governor is '{governor}', not 'performance': latency may vary with clocks")
    if env.get("jetson"):
        hints.append("Jetson: lock clocks with `sudo jetson_clocks` (and pick a power mode with "
                     "`sudo nvpmodel -m N`) before benchmarking")
    for gpu in env.get("gpus", []):
        sm, top = gpu.get("clocks.sm"), gpu.get("clocks.max.sm")
        if sm and top and sm.isdigit() and top.isdigit() and int(sm) < int(top):
            hints.append(f"GPU {gpu.get('name')}: SM clock {sm} MHz below its max {top} MHz when "
                         "captured (idle or not locked; `nvidia-smi -lgc` locks it)")
    return hints


def load_hint(load: list[float] | None, cores: int | None, when: str) -> str | None:
    """A warning when the 1-minute load average says other work shared the CPU."""
    # the benchmark itself keeps about `threads` cores busy, so only load beyond all cores is "other work"
    if load and cores and load[0] > cores:
        return (f"machine busy when the run {when}: load average {load[0]:.1f} on {cores} cores; "
                "latency is inflated by other work")
    return None


def device_memory_mb(pid: int | None = None) -> float | None:
    """GPU memory this process holds, from nvidia-smi (None without a GPU or when not listed)."""
    out = _run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    if not out:
        return None
    pid = os.getpid() if pid is None else pid
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid) and fields[1].isdigit():
            return float(fields[1])
    return None
