"""A short seeded run of the frame fuzzer (benchmarks/fuzz_frames.py): mutated PNG, JPEG, PDS3 and
PDS4 frames give a frame or a FrameError, and edge-run's reader stage never raises or hangs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_seeded_fuzz_finds_nothing(tmp_path):
    report = tmp_path / "fuzz.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/fuzz_frames.py"), "--seconds", "12",
                           "--seed", "0", "--hang", "10", "--max-rss-mb", "1024", "--json", str(report),
                           "--findings", str(tmp_path / "findings")],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["findings"] == []
    assert result["executions"] >= 200 and result["frames"] > 0 and result["frame_errors"] > 0
    assert all(n > 0 for n in result["per_seed"].values()) and set(result["per_seed"]) == {
        "png8", "png16", "jpeg", "pds3", "pds4"}
