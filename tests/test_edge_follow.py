"""`edge-run DIR OUT --follow`: another process writes frames into DIR slowly, in pieces; each is
processed once it is complete, exactly once, with the masks a plain run of the finished folder
gives; SIGTERM ends the watch with summary.json; `--resume` after a restart goes on without
reading a frame twice."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from edge_run_support import edge_run_process

from marsedge.edge.run import main

# writes each frame in 3 pieces, PAUSE s apart (longer than the follower's 0.2 s listing interval)
SLOW_WRITER = """
import sys, time
pause = float(sys.argv[1])
for source, target in zip(sys.argv[2::2], sys.argv[3::2]):
    data = open(source, "rb").read()
    with open(target, "wb") as f:
        for start in range(0, len(data), len(data) // 3 + 1):
            f.write(data[start:start + len(data) // 3 + 1])
            f.flush()
            time.sleep(pause)
"""
PAUSE, SETTLE = 0.3, "1.5"


def write_slowly(sources, folder) -> subprocess.Popen:
    pairs = [str(p) for s in sources for p in (s, folder / s.name)]
    return subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(PAUSE), *pairs])


def lines(out) -> list[dict]:
    path = out / "frames.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(out, count: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while len(lines(out)) < count:
        if proc.poll() is not None:
            pytest.fail(f"edge-run ended early: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{len(lines(out))} of {count} frames within {seconds} s")
        time.sleep(0.1)


def stop(proc: subprocess.Popen, signum: int) -> tuple[int, str]:
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("edge-run --follow did not end within 20 s of the signal")
    return proc.returncode, err


def test_follow_takes_each_slowly_written_frame_once_complete(edge_student, tiny_ai4mars, tmp_path):
    sources = sorted((tiny_ai4mars / "msl/images/edr").iterdir())[:4]
    watched, out = tmp_path / "downlink", tmp_path / "out"
    watched.mkdir()
    args = [watched, out, "--model", edge_student[1], "--threads", "1", "--follow", "--settle", SETTLE,
            "--visualize", "mask", "--resume"]
    proc = edge_run_process(args)
    writer = write_slowly(sources[:3], watched)
    wait_for(out, 3, proc)
    assert writer.wait(timeout=30) == 0
    time.sleep(0.5)  # nothing more to take: no frame is read twice
    rc, err = stop(proc, signal.SIGTERM)
    assert rc == 143, err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["frames_ok"] == 3 and summary["frames_failed"] == 0
    first = lines(out)
    assert sorted(r["name"] for r in first) == [s.name for s in sources[:3]]

    # a restart (after a crash, a reboot) continues: the new frame only, never the earlier ones again
    proc = edge_run_process(args)
    time.sleep(1.0)
    writer = write_slowly(sources[3:], watched)
    wait_for(out, 4, proc)
    assert writer.wait(timeout=30) == 0
    rc, err = stop(proc, signal.SIGINT)
    assert rc == 130, err[-2000:]
    assert [r["name"] for r in lines(out)] == [r["name"] for r in first] + [sources[3].name]

    # the masks of a plain run over the finished folder
    reference = tmp_path / "reference"
    shutil.copytree(watched, tmp_path / "finished")
    assert main([str(tmp_path / "finished"), str(reference), "--model", str(edge_student[1]),
                 "--threads", "1", "--visualize", "mask", "--backend-probe", "0"]) == 0
    for record in lines(out):
        got = cv2.imread(str(out / record["mask"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, cv2.imread(str(reference / record["mask"]), cv2.IMREAD_UNCHANGED))


def test_follow_needs_a_folder(edge_student, tmp_path, capsys):
    frame = tmp_path / "one.png"
    cv2.imwrite(str(frame), np.zeros((64, 64), np.uint8))
    assert main([str(frame), str(tmp_path / "out"), "--model", str(edge_student[1]), "--follow"]) == 2
    assert "--follow watches a folder of frames" in capsys.readouterr().err
