"""Which autocast dtype a run uses: `run.amp` none / bf16 / fp16, or auto (what pays on this device).

bf16 autocast is only a speed-up where the hardware multiplies bf16 natively. On a CPU without
AVX512-BF16 or AMX (seen here: an "AMD EPYC" virtual machine whose /proc/cpuinfo lists avx2 and no
AVX-512 at all) oneDNN emulates it, and the demo teacher (r18_0.5x) trained at 2.4 img/s under bf16
against 38.8 img/s in fp32 (benchmarks/results/train_throughput.md, batch 8 at 128 px, 2 threads);
on an Intel Xeon with AMX a quarter-width demo teacher trained 1.2x faster in bf16 than in fp32.
So `auto` asks the device: CUDA -> bf16 where supported, else fp16; CPU -> bf16 with native bf16
instructions, else none.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from marsedge.errors import ConfigError

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags


@functools.lru_cache(maxsize=4)
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU's flags list AMX-BF16 or AVX512-BF16 (False where they cannot be read)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return any(flag in line.split() for flag in NATIVE_BF16_FLAGS)
    return False


def resolve_amp(requested: str, device: torch.device) -> str:
    """The autocast setting a run actually uses on `device`: "none", "bf16" or "fp16"."""
    if requested == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "none"
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError("config key 'run.amp': fp16 needs a CUDA device; use bf16, auto or none on CPU")
    return requested


def autocast_dtype(requested: str, device: torch.device) -> torch.dtype | None:
    """The dtype for torch.autocast, or None for full precision."""
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[resolve_amp(requested, device)]


def autocast_context(amp: str, device: torch.device):
    """torch.autocast for `run.amp` on `device`, or a null context for full precision."""
    dtype = autocast_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
