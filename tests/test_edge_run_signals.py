"""edge-run as a process: SIGINT/SIGTERM end it within 2 s in every state (reading, inferring, the
writer or every encoder stuck with the queues full, the writer or an encoder dead), with the
documented exit code and a summary."""

from __future__ import annotations

import json
import os
import re
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
from marsedge.runtimes.onnxruntime import runner
def infer(self, batch):
    pathlib.Path(MARKER).touch()
    time.sleep(3600)
runner.OnnxBackend.infer = infer
"""
DEAD_WRITER = """
import pathlib
from marsedge.edge import sinks
def write(self, frame):
    pathlib.Path(MARKER).touch()
    raise MemoryError("no memory for the overlay")
sinks.Writer.write = write
"""
STUCK_ENCODER = """
import pathlib, time
from marsedge.edge import sinks
def encode(self, frame):
    pathlib.Path(MARKER).touch()
    time.sleep(3600)  # an encoder that never returns: the outbox fills up behind it
sinks.Writer.encode = encode
"""
DEAD_ENCODER = """
import pathlib
from marsedge.edge import sinks
def encode(self, frame):
    pathlib.Path(MARKER).touch()
    raise MemoryError("no memory for the overlay")
sinks.Writer.encode = encode
"""
ENCODERS = ("--encoders", "2")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("state, patch, signum, extra", [
    ("writer stuck, queues full", STUCK_WRITER, signal.SIGTERM, ()),
    ("reading", STUCK_READER, signal.SIGINT, ()),
    ("inferring", STUCK_MODEL, signal.SIGTERM, ()),
    ("inferring on two streams", STUCK_MODEL, signal.SIGINT, ("--streams", "2")),
    ("every encoder stuck", STUCK_ENCODER, signal.SIGTERM, ENCODERS),
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
    if patch is STUCK_ENCODER:
        assert "edge-run encoder 1" in summary["stuck_stages"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("patch, extra, code, stage", [
    (DEAD_WRITER, (), 3, "writer"),
    (DEAD_ENCODER, ENCODERS, 1, "encoder [12]"),
])
def test_a_dead_stage_stops_the_run_by_itself(patch, extra, code, stage, edge_student, tiny_ai4mars,
                                              tmp_path):
    proc = start_with_fault(edge_student, tiny_ai4mars, tmp_path, patch, extra)
    _, err = ended_within(proc, 2.0)
    assert proc.returncode == code, err
    assert re.match(rf"edge-run: error: {stage} stage failed: MemoryError: no memory for the overlay \(run "
                    r"stopped;", err.strip().splitlines()[-1]), err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "stopped" and "MemoryError" in summary["reason"]
    assert summary["exit_code"] == code
