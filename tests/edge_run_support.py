"""Helpers for the edge-run fault tests: frame folders, a small tmpfs, edge-run as a subprocess.

Fixture files are built from the formats' public descriptions (PNG chunks by hand), not by the
project's own writers.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def copy_frames(tiny_ai4mars: Path, folder: Path, n: int = 5) -> list[Path]:
    """n real NAVCAM-like JPEGs from the tiny AI4Mars tree."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in sorted((tiny_ai4mars / "msl/images/edr").iterdir())[:n]:
        out.append(Path(shutil.copy(path, folder / path.name)))
    return out


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int, rows: int = 4) -> bytes:
    """A small, well-formed 8-bit grey PNG whose IHDR declares width x height (a pixel bomb):
    only `rows` rows of pixel data follow, compressed."""
    raw = b"".join(b"\x00" + bytes(width) for _ in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def mount_tmpfs(folder: Path, size: str = "256k", readonly: bool = False) -> None:
    """Mount a small tmpfs on folder, or skip the test saying why it cannot be done here."""
    if not is_root():
        pytest.skip("mounting a tmpfs needs root (the full-disk / read-only test runs where it is allowed)")
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def edge_run_process(args: list[str], patch: str = "") -> subprocess.Popen:
    """edge-run in a child process, after `patch` (Python source run first: a fault to inject)."""
    script = "import sys\n" + patch + "\nfrom marsedge.edge.run import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_with_fault(edge_student, tiny_ai4mars, tmp_path, patch, extra=()) -> subprocess.Popen:
    """edge-run looping over 3 frames with `patch` injected; returns once the fault is reached
    (the patch touches MARKER)."""
    copy_frames(tiny_ai4mars, tmp_path / "in", 3)
    marker = tmp_path / "reached"
    proc = edge_run_process([tmp_path / "in", tmp_path / "out", "--model", edge_student[1], "--threads", "1",
                             "--loop", "--queue", "1", *extra], f"MARKER = {str(marker)!r}\n{patch}")
    deadline = time.time() + 90
    while not marker.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the fault was never reached: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    return proc


def ended_within(proc: subprocess.Popen, seconds: float) -> tuple[float, str]:
    """Wait for the process (30 s at most); fail unless it ended within `seconds`."""
    start = time.monotonic()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("edge-run did not end within 30 s")
    elapsed = time.monotonic() - start
    assert elapsed <= seconds, f"took {elapsed:.2f} s"
    return elapsed, err
