"""Output ownership: the lock holds against a second process and dies with its holder."""

import subprocess
import sys

import pytest

from marsedge.errors import ConfigError
from marsedge.ownership import OutputBusy, OutputLock, refuse_existing, refuse_same_path

HOLD = ("import sys, time; from marsedge.ownership import OutputLock; "
        "OutputLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)")


def test_second_holder_refused_while_first_lives_then_admitted(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusy, match=f"pid {child.pid}"):
            OutputLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()
    with OutputLock(tmp_path):  # the kernel released the dead holder's lock
        pass


def test_same_path_and_existing_refused(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    with pytest.raises(ConfigError, match="input itself"):
        refuse_same_path(f, tmp_path / "." / "m.onnx")
    with pytest.raises(ConfigError, match="--overwrite"):
        refuse_existing(f, overwrite=False)
    refuse_existing(f, overwrite=True)
