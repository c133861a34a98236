"""The edge-run soak (tests/edge_soak.py) on the tiny test student: RSS flat, every broken frame
named once per feed, no good frame failing, ok + failed = seen. Minutes of edge-run, so only under
`pytest -m long`; `MARSEDGE_SOAK_FRAMES` (default 2000) sets its length."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FRAMES = int(os.environ.get("MARSEDGE_SOAK_FRAMES", "2000"))


@pytest.mark.long
@pytest.mark.timeout(600 + FRAMES // 10)
def test_soak_keeps_memory_flat_and_names_every_failure(edge_student, tmp_path):
    window = max(1, min(1000, FRAMES // 5))
    done = subprocess.run([sys.executable, str(HERE / "edge_soak.py"), "--frames", str(FRAMES),
                           "--model", str(edge_student[1]), "--window", str(window), "--work",
                           str(tmp_path / "work"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=540 + FRAMES // 10)
    result = json.loads((tmp_path / "out" / "edge_soak.json").read_text())
    assert done.returncode == 0, (result["checks"], done.stderr[-2000:])
    assert all(result["checks"].values()) and result["frames_seen"] == FRAMES
    assert result["frames_failed"] == result["broken_frames_fed"] > 0
