"""`run.amp: auto` picks bf16 only where the device multiplies bf16 natively (bf16 autocast was
16x slower than fp32 on an AMD EPYC without AVX512-BF16, 1.2x faster on an AMX Xeon)."""

import pytest
import torch

from marsedge.errors import ConfigError
from marsedge.train.engine.precision import autocast_dtype, cpu_has_native_bf16, resolve_amp

# flags lines as /proc/cpuinfo prints them (abridged to the vector extensions)
SAPPHIRE_RAPIDS = "flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN_AVX2_ONLY = "flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2 sha_ni\n"


def cpuinfo(tmp_path, name: str, flags: str):
    path = tmp_path / name  # one file per case: cpu_has_native_bf16 caches by path
    path.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: some CPU\n" + flags)
    return path


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    assert cpu_has_native_bf16(cpuinfo(tmp_path, "spr", SAPPHIRE_RAPIDS)) is True
    assert cpu_has_native_bf16(cpuinfo(tmp_path, "zen", ZEN_AVX2_ONLY)) is False
    # a flag name inside a longer one does not count
    assert cpu_has_native_bf16(cpuinfo(tmp_path, "longer", "flags\t: avx512_bf16x\n")) is False
    assert cpu_has_native_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "none")])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    import marsedge.train.engine.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("auto", torch.device("cpu")) == expected
    assert autocast_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)


def test_explicit_settings_are_kept_and_fp16_on_cpu_is_refused():
    cpu = torch.device("cpu")
    assert resolve_amp("bf16", cpu) == "bf16" and resolve_amp("none", cpu) == "none"
    with pytest.raises(ConfigError, match="run.amp"):
        resolve_amp("fp16", cpu)
