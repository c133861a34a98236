"""Atomic writes: a reader sees the old file or the new one, never a torn one, with usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from marsedge import io as mio


def test_bytes_land_whole_with_umask_permissions_and_no_temporary_left(tmp_path):
    target = tmp_path / "new" / "deeper" / "mask.png"  # folders that do not exist yet
    mio.atomic_write_bytes(target, b"\x89PNG first")
    mio.atomic_write_bytes(target, b"\x89PNG second")  # replaces in place
    assert target.read_bytes() == b"\x89PNG second"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    assert sorted(p.name for p in target.parent.iterdir()) == ["mask.png"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "overlay.jpg"
    mio.atomic_write_bytes(target, b"old")

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mio.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        mio.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.jpg"]


def test_without_replace_a_file_that_appeared_meanwhile_is_kept_and_so_is_the_result(tmp_path):
    target = tmp_path / "student.int8.onnx"

    def slow_write(tmp):  # another command finishes at the same path while this one writes
        target.write_bytes(b"theirs")
        tmp.write_bytes(b"ours")

    with pytest.raises(mio.OutputAppeared, match="appeared while this command ran") as caught:
        mio.atomic_write(target, slow_write, replace=False)
    assert target.read_bytes() == b"theirs"
    assert caught.value.kept.read_bytes() == b"ours" and caught.value.kept.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, caught.value.kept.name])
    mio.atomic_write_bytes(tmp_path / "free.onnx", b"x", replace=False)  # a free path: written
    assert (tmp_path / "free.onnx").read_bytes() == b"x"
