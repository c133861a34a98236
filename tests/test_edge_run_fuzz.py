"""The frame fuzzer (tests/fuzz_frames.py): mutated PNG, JPEG, PDS3 and PDS4 frames give a frame or
a FrameError, and edge-run's reader stage never raises or hangs. A seeded 12-second run in every test
run; the long run (`MARSEDGE_FUZZ_SECONDS`, default 120) under `pytest -m long`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LONG_SECONDS = float(os.environ.get("MARSEDGE_FUZZ_SECONDS", "120"))


def fuzz(tmp_path: Path, seconds: float, seed: int) -> dict:
    report = tmp_path / "fuzz.json"
    done = subprocess.run([sys.executable, str(HERE / "fuzz_frames.py"), "--seconds", str(seconds),
                           "--seed", str(seed), "--hang", "10", "--max-rss-mb", "1024", "--json", str(report),
                           "--findings", str(tmp_path / "findings")],
                          capture_output=True, text=True, timeout=seconds + 80)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.mark.timeout(120)
def test_seeded_fuzz_finds_nothing(tmp_path):
    result = fuzz(tmp_path, 12, seed=0)
    assert result["findings"] == []
    assert result["executions"] >= 200 and result["frames"] > 0 and result["frame_errors"] > 0
    assert all(n > 0 for n in result["per_seed"].values()) and set(result["per_seed"]) == {
        "png8", "png16", "jpeg", "pds3", "pds4"}


@pytest.mark.long
@pytest.mark.timeout(LONG_SECONDS + 120)
def test_long_fuzz_finds_nothing(tmp_path):
    result = fuzz(tmp_path, LONG_SECONDS, seed=1)
    assert result["findings"] == [] and result["seconds"] >= 0.9 * LONG_SECONDS
