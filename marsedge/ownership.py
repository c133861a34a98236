"""Output ownership: one rule for every command that writes (train.py, distill.py, export, quantize,
edge-run, bench, report).

- A command holds a lock on its output folder for its whole run (`OutputLock`): a second command
  aimed at the same folder is refused at once with a line naming the folder and the holder's pid,
  instead of interleaving its writes with the first one's.
- Its output is never its input (`refuse_same_path`).
- A finished result is never replaced unless the user said `--overwrite` (`refuse_existing`).

The lock is an advisory `flock` on `OUTPUT/.marsedge.lock`: the kernel releases it when the process
dies, however it dies, so a crashed run never leaves a folder locked. The file itself stays (removing
it would race a second locker); it holds the pid of the last holder, for the error message only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from marsedge.errors import ConfigError, MarsedgeError

LOCK_NAME = ".marsedge.lock"


class OutputBusy(MarsedgeError):
    """Another live command holds the output folder."""

    exit_code = 1


class OutputLock:
    """Hold `folder` (created if missing) for the life of a run: `with OutputLock(out): ...`."""

    def __init__(self, folder: str | Path, command: str = "marsedge"):
        self.folder = Path(folder)
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        if self.folder.exists() and not self.folder.is_dir():  # a model or results file given as -o
            raise ConfigError(f"{self.folder}: the output is a file, not a folder; choose a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise OutputBusy(f"{self.folder}: in use by a running command ({holder}); "
                             "wait for it to end or choose another output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.command} pid {os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def refuse_same_path(source: str | Path, output: str | Path, what: str = "output") -> None:
    """The output may not be the input itself (a symlink or `./` spelling of it included)."""
    src, out = Path(source).resolve(), Path(output).resolve()
    if src == out:
        raise ConfigError(f"{output}: the {what} is the input itself; choose another path")


def refuse_existing(path: str | Path, overwrite: bool, what: str = "output") -> None:
    """A finished result is replaced only with --overwrite."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise ConfigError(f"{p}: {what} exists; pass --overwrite to replace it")
