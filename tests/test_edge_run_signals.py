"""edge-run as a process: SIGINT/SIGTERM end it within 2 s in every state (reading, inferring, the
writer stuck with the queues full, the writer dead), with the documented exit code and a summary."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from edge_run_support import ended_within, start_with_fault

# Faults injected into the child before edge-run starts; each touches MARKER when the state is reached.
STUCK_WRITER = """
import pathlib, time
from marsedge.edge import sinks
def write(self, frame):
    pathlib.Path(MARKER).touch()
    time.sleep(3600)  # a write that never returns (a hung disk): the queues fill up behind it
sinks.Writer.write = write
"""
STUCK_READER = """
import pathlib, time
from marsedge.data import frames
def read_frame(path, *args, **kwargs):
    pathlib.Path(MARKER).touch()
    time.sleep(3600)
frames.read_frame = read_frame
"""
STUCK_MODEL = """
import pathlib, time
from marsedge.edge import backends
def infer(self, batch):
    pathlib.Path(MARKER).touch()
    time.sleep(3600)
backends.OnnxBackend.infer = infer
"""
DEAD_WRITER = """
import pathlib
from marsedge.edge import sinks
def write(self, frame):
    pathlib.Path(MARKER).touch()
    raise MemoryError("no memory for the overlay")
sinks.Writer.write = write
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("state, patch, signum, extra", [
    ("writer stuck, queues full", STUCK_WRITER, signal.SIGTERM, ()),
    ("reading", STUCK_READER, signal.SIGINT, ()),
    ("inferring", STUCK_MODEL, signal.SIGTERM, ()),
    ("inferring on two streams", STUCK_MODEL, signal.SIGINT, ("--streams", "2")),
])
def test_signal_ends_the_run_within_2_s(state, patch, signum, extra, edge_student, tiny_ai4mars, tmp_path):
    proc = start_with_fault(edge_student, tiny_ai4mars, tmp_path, patch, extra)
    time.sleep(0.5)  # the queues behind the stuck stage fill up
    os.kill(proc.pid, signum)
    _, err = ended_within(proc, 2.0)
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines()[-1] == f"edge-run: stopped by {signal.Signals(signum).name}"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["exit_code"] == 128 + signum
    assert summary["stuck_stages"], state  # the stuck stage was left behind, not waited for


@pytest.mark.timeout(180)
def test_dead_writer_stops_the_run_by_itself(edge_student, tiny_ai4mars, tmp_path):
    proc = start_with_fault(edge_student, tiny_ai4mars, tmp_path, DEAD_WRITER)
    _, err = ended_within(proc, 2.0)
    assert proc.returncode == 3, err
    assert err.strip().splitlines()[-1].startswith(
        "edge-run: error: writer stage failed: MemoryError: no memory for the overlay (run stopped;")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "stopped" and "MemoryError" in summary["reason"]
