"""edge-run with a pool of encoders (`--encoders N`): postprocessing and PNG/JPEG encoding of several
frames at once, the files and frames.jsonl still written by one thread in input order, so the
outputs are exactly those of one writer. (A stuck or dead encoder: tests/test_edge_run_signals.py.)"""

from __future__ import annotations

import json
import threading
import time

import pytest
from edge_run_support import copy_frames

from marsedge.edge import sinks
from marsedge.edge.run import main


def _lines(out):
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def _without_ms(records):
    return [{k: v for k, v in r.items() if k != "ms"} for r in records]


@pytest.mark.timeout(120)
def test_encoders_write_what_one_writer_writes_in_input_order(edge_student, tiny_ai4mars, tmp_path,
                                                              monkeypatch):
    frames = copy_frames(tiny_ai4mars, tmp_path / "in", 7)
    frames[2].write_bytes(b"\xff\xd8 not a JPEG")  # a failed frame keeps its place too
    args = ["--model", str(edge_student[1]), "--threads", "2", "--backend-probe", "0"]
    assert main([str(tmp_path / "in"), str(tmp_path / "one"), *args]) == 0

    used, original = set(), sinks.Writer.encode

    def uneven(self, frame):  # frame 0 is the slowest: the other encoders finish frames 1.. first
        used.add(threading.current_thread().name)
        time.sleep(0.3 if frame.index == 0 else 0.0)
        original(self, frame)

    monkeypatch.setattr(sinks.Writer, "encode", uneven)
    assert main([str(tmp_path / "in"), str(tmp_path / "pool"), *args, "--encoders", "3"]) == 0
    assert len(used) >= 2 and used <= {f"edge-run encoder {i}" for i in (1, 2, 3)}
    one, pool = _lines(tmp_path / "one"), _lines(tmp_path / "pool")
    assert [r["index"] for r in pool] == list(range(7)) and "error" in pool[2]
    assert _without_ms(pool) == _without_ms(one)
    for record in one:
        for visual in ("mask", "overlay"):
            if visual in record:
                assert (tmp_path / "pool" / record[visual]).read_bytes() == \
                    (tmp_path / "one" / record[visual]).read_bytes()
    assert set(pool[0]["ms"]) == {"decode", "preprocess", "infer", "postprocess", "encode", "write"}
    summary = json.loads((tmp_path / "pool" / "summary.json").read_text())
    assert summary["encoders"] == 3 and summary["frames_ok"] == 6 and summary["frames_failed"] == 1
    assert summary["frames_dropped"] == 0

