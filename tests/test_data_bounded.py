"""Bounded decoding: the pixel limit is read from headers before decoding, and a reader or folder
entry that fails in any way becomes a FrameError naming the file, never another exception."""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from test_data_pds import WORDS, write_pds3, write_pds4

from marsedge.data import frames
from marsedge.data.frames import list_frames, read_frame, scan_frames
from marsedge.data.inputs import iter_frames
from marsedge.data.readers import DEFAULT_MAX_PIXELS, header_size
from marsedge.errors import ConfigError, FrameError


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(path, width=40000, height=40000) -> None:
    """A few hundred bytes of PNG (PNG spec: signature, IHDR, IDAT, IEND) declaring a huge grey image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def jpeg_declaring(path, width: int, height: int) -> None:
    """A real small JPEG whose SOF0 segment (ITU T.81 B.2.2: FFC0, length, precision, Y, X) is rewritten."""
    ok, buf = cv2.imencode(".jpg", np.full((16, 16), 99, np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


def test_png_and_jpeg_bombs_refused_from_the_header(tmp_path):
    png_bomb(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 1000
    with pytest.raises(FrameError, match=r"bomb\.png declares 40000x40000 = 1,600,000,000 pixels"):
        read_frame(tmp_path / "bomb.png")
    jpeg_declaring(tmp_path / "bomb.jpg", 30000, 20000)
    assert header_size((tmp_path / "bomb.jpg").read_bytes()) == (30000, 20000)
    with pytest.raises(FrameError, match=r"bomb\.jpg declares 30000x20000"):
        read_frame(tmp_path / "bomb.jpg")


def test_limit_is_configurable_by_argument_and_environment(tmp_path, monkeypatch):
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((20, 30), np.uint8))
    assert read_frame(tmp_path / "ok.png").shape == (20, 30)
    assert DEFAULT_MAX_PIXELS == 64_000_000
    with pytest.raises(FrameError, match="20 = 600 pixels, over the limit of 599"):
        read_frame(tmp_path / "ok.png", max_pixels=599)
    monkeypatch.setenv("MARSEDGE_MAX_PIXELS", "100")
    with pytest.raises(FrameError, match="MARSEDGE_MAX_PIXELS"):
        read_frame(tmp_path / "ok.png")
    assert read_frame(tmp_path / "ok.png", max_pixels=600).shape == (20, 30)  # the argument wins
    monkeypatch.setenv("MARSEDGE_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="MARSEDGE_MAX_PIXELS"):
        read_frame(tmp_path / "ok.png")


def test_pds_labels_are_checked_against_the_limit(tmp_path):
    write_pds3(tmp_path / "a.IMG", WORDS)
    write_pds4(tmp_path / "b.xml", WORDS)
    for name in ("a.IMG", "b.xml"):
        assert read_frame(tmp_path / name, max_pixels=48).shape == (6, 8)
        with pytest.raises(FrameError, match=rf"{name.replace('.', '[.]')} declares 8x6 = 48 pixels"):
            read_frame(tmp_path / name, max_pixels=47)


def test_video_capture_size_is_checked(tmp_path):
    path = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for _ in range(3):
        writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    assert len(list(iter_frames(path, max_pixels=32 * 24))) == 3
    (name, error), *rest = list(iter_frames(path, max_pixels=100))
    assert isinstance(error, FrameError) and "32x24" in str(error) and not rest


@pytest.mark.parametrize(
    "exc",
    [
        cv2.error("OpenCV(4) imgcodecs: -215:Assertion failed\n  more"),
        PermissionError(13, "Permission denied"),
        ValueError("bad"),
        MemoryError(),
    ],
)
def test_foreign_decoder_exceptions_become_frame_errors(tmp_path, monkeypatch, exc):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((4, 4), i, np.uint8))
    real = frames.READERS[".png"]

    def flaky(path, limit):
        if path.name == "f1.png":
            raise exc
        return real(path, limit)

    monkeypatch.setitem(frames.READERS, ".png", flaky)
    with pytest.raises(FrameError) as err:
        read_frame(tmp_path / "f1.png")
    assert str(tmp_path / "f1.png") in str(err.value) and "\n" not in str(err.value)
    got = list(iter_frames(tmp_path))  # the folder goes on past the failure
    assert [n for n, _ in got] == ["f0.png", "f1.png", "f2.png"]
    assert isinstance(got[1][1], FrameError) and isinstance(got[2][1], np.ndarray)


def test_fifos_symlink_loops_and_dangling_links_are_skipped_with_a_reason(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4), np.uint8))
    os.mkfifo(tmp_path / "b.png")  # opening it would block forever
    os.symlink(tmp_path / "c.png", tmp_path / "c.png")  # a loop
    os.symlink(tmp_path / "nowhere.png", tmp_path / "d.jpg")
    os.symlink(tmp_path / "a.png", tmp_path / "e.png")  # a good link is a frame
    scan = scan_frames(tmp_path)
    assert [p.name for p in scan.files] == ["a.png", "e.png"]
    assert {p.name: why for p, why in scan.skipped}["b.png"] == "not a regular file (FIFO)"
    assert "symbolic links" in dict((p.name, w) for p, w in scan.skipped)["c.png"]
    assert list_frames(tmp_path) == scan.files
    got = dict(iter_frames(tmp_path))
    assert list(got) == ["a.png", "b.png", "c.png", "d.jpg", "e.png"]
    assert all(
        isinstance(got[n], FrameError) and "skipped" in str(got[n]) for n in ("b.png", "c.png", "d.jpg")
    )
    assert isinstance(got["e.png"], np.ndarray)


def test_unlistable_folder_is_one_frame_error(tmp_path, monkeypatch):
    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(tmp_path), "iterdir", denied)
    with pytest.raises(FrameError, match=f"cannot list {tmp_path}: Permission denied"):
        list(iter_frames(tmp_path))


def test_glob_names_are_relative_to_the_fixed_folders(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "f.png"), np.zeros((4, 4), np.uint8))
    names = [n for n, _ in iter_frames(str(tmp_path / "*" / "f.png"))]
    assert names == ["x/f.png", "y/f.png"]  # no collision between the two f.png


def test_a_png_chunk_longer_than_the_file_is_refused_before_decoding(tmp_path):
    """A 3 KB PNG whose IDAT declares 2 GiB made OpenCV allocate 2.1 GB (a fuzzing finding). Built
    from the PNG standard: signature, IHDR (13 bytes: 64x48, 8-bit grey), an IDAT whose length field
    lies, IEND."""

    def chunk(kind: bytes, body: bytes, length: int | None = None) -> bytes:
        size = len(body) if length is None else length
        return struct.pack(">I", size) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 64, 48, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + bytes(64) for _ in range(48)))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels, 2**31) + chunk(b"IEND", b"")
    path = tmp_path / "liar.png"
    path.write_bytes(png)
    with pytest.raises(FrameError, match=r"chunk b'IDAT' .* past the end of the file: .*liar.png"):
        read_frame(path)
    honest = tmp_path / "honest.png"
    honest.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels)
                       + chunk(b"IEND", b""))
    assert read_frame(honest).shape == (48, 64)
