"""Frame readers: JPG/PNG (8/16 bit), PDS3 and PDS4 through pdr, bad files, folders, globs, video."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from test_data_pds import write_pds4 as write_pds4_product

from marsedge.data.frames import READERS, list_frames, read_frame, scale_to_uint8
from marsedge.data.inputs import iter_frames
from marsedge.errors import FrameError

# a 12-bit NAVCAM-like frame: samples 0..4095 in 16-bit words
SAMPLES_12BIT = (np.arange(8 * 6, dtype=np.uint16).reshape(8, 6) * 87) % 4096
SAMPLES_12BIT[0, 0], SAMPLES_12BIT[0, 1] = 4095, 0
EXPECTED_8BIT = np.round(SAMPLES_12BIT.astype(np.float64) * 255 / 4095).astype(np.uint8)


def write_pds3(path, samples: np.ndarray, bit_mask: str = "2#0000111111111111#") -> None:
    """A PDS3 .IMG with an attached label: MSB 16-bit words, 12 significant bits declared."""
    lines, cols = samples.shape
    record = 2 * cols
    label_records = 0
    while True:  # the label occupies whole records; the image starts at record label_records + 1
        label_records += 1
        text = "\r\n".join(
            [
                "PDS_VERSION_ID = PDS3",
                "RECORD_TYPE = FIXED_LENGTH",
                f"RECORD_BYTES = {record}",
                f"FILE_RECORDS = {label_records + lines}",
                f"LABEL_RECORDS = {label_records}",
                f"^IMAGE = {label_records + 1}",
                "OBJECT = IMAGE",
                f"  LINES = {lines}",
                f"  LINE_SAMPLES = {cols}",
                "  SAMPLE_TYPE = MSB_UNSIGNED_INTEGER",
                "  SAMPLE_BITS = 16",
                f"  SAMPLE_BIT_MASK = {bit_mask}",
                "  BANDS = 1",
                "END_OBJECT = IMAGE",
                "END",
                "",
            ]
        ).encode()
        if len(text) <= label_records * record:
            break
    path.write_bytes(text.ljust(label_records * record, b" ") + samples.astype(">u2").tobytes())


def write_pds4(xml_path, samples: np.ndarray) -> None:
    """A PDS4 label + raw .img: UnsignedMSB2 words, img:sample_bits 12 and the bit mask M2020/MSL
    labels declare."""
    write_pds4_product(xml_path, samples, bit_mask="2#0000111111111111", data_suffix=".img")


def png_with_sbit(path, samples: np.ndarray, bits: int) -> None:
    """A 16-bit PNG with an sBIT chunk (significant bits) inserted after IHDR."""
    ok, buf = cv2.imencode(".png", samples)
    data = buf.tobytes()
    ihdr_end = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    body = b"sBIT" + bytes([bits])
    chunk = struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body))
    path.write_bytes(data[:ihdr_end] + chunk + data[ihdr_end:])


def test_registry_covers_the_formats():
    for suffix in (".jpg", ".jpeg", ".png", ".tif", ".img", ".xml", ".lbl"):
        assert suffix in READERS


def test_pds3_attached_label_12_bit_scaled_by_declared_depth(tmp_path):
    path = tmp_path / "NLA_0001EDR.IMG"
    write_pds3(path, SAMPLES_12BIT)
    frame = read_frame(path)
    assert frame.dtype == np.uint8 and frame.shape == (8, 6)
    np.testing.assert_array_equal(frame, EXPECTED_8BIT)  # 4095 -> 255, not 4095/65535*255 = 15
    # the same words declared as 16 significant bits scale differently: the label decides
    write_pds3(path, SAMPLES_12BIT, bit_mask="2#1111111111111111#")
    assert read_frame(path).max() == round(4095 * 255 / 65535)


def test_pds4_label_and_raw_data_12_bit(tmp_path):
    xml = tmp_path / "NLF_0001.xml"
    write_pds4(xml, SAMPLES_12BIT)
    np.testing.assert_array_equal(read_frame(xml), EXPECTED_8BIT)
    # a folder holding the label and its data lists the product once, by its label
    assert list_frames(tmp_path) == [xml]


def test_jpg_and_png_8_bit_grey_and_colour(tmp_path):
    grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(read_frame(tmp_path / "g.png"), grey)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB order
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_frame(tmp_path / "c.png"), rgb)
    cv2.imwrite(str(tmp_path / "g.JPG"), np.full((16, 16), 90, np.uint8))
    frame = read_frame(tmp_path / "g.JPG")
    assert frame.shape == (16, 16) and abs(int(frame.mean()) - 90) <= 1


def test_png_16_bit_by_significant_bits(tmp_path):
    cv2.imwrite(str(tmp_path / "full.png"), SAMPLES_12BIT * 16)  # 12-bit data shifted to 16 bits
    assert read_frame(tmp_path / "full.png").max() == 255
    png_with_sbit(tmp_path / "sbit.png", SAMPLES_12BIT, 12)
    np.testing.assert_array_equal(read_frame(tmp_path / "sbit.png"), EXPECTED_8BIT)


def test_scale_to_uint8_uses_the_given_depth():
    assert scale_to_uint8(np.array([1023], np.uint16), 10)[0] == 255
    assert scale_to_uint8(np.array([1023], np.uint16))[0] == 4  # 16-bit default
    assert scale_to_uint8(np.array([0.5], np.float32))[0] == 128


@pytest.mark.parametrize(
    "name, content, why",
    [
        ("empty.png", b"", "empty file"),
        ("empty.IMG", b"", "empty file"),
        ("garbage.jpg", b"not a jpeg at all" * 10, "cannot decode"),
    ],
)
def test_bad_files_raise_frame_error_with_path(tmp_path, name, content, why):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FrameError, match=why) as err:
        read_frame(path)
    assert str(path) in str(err.value)


def test_truncated_jpg_png_and_pds(tmp_path):
    image = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    for suffix in (".jpg", ".png"):
        ok, buf = cv2.imencode(suffix, image)
        path = tmp_path / f"cut{suffix}"
        path.write_bytes(buf.tobytes()[: len(buf) // 2])
        with pytest.raises(FrameError, match="truncated") as err:
            read_frame(path)
        assert str(path) in str(err.value)
    pds = tmp_path / "cut.IMG"
    write_pds3(pds, SAMPLES_12BIT)
    pds.write_bytes(pds.read_bytes()[:-20])
    with pytest.raises(FrameError, match="cut.IMG"):
        read_frame(pds)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(FrameError, match="no reader for '.gif'"):
        read_frame(tmp_path / "x.gif")
    with pytest.raises(FrameError, match="frame not found"):
        read_frame(tmp_path / "x.png")


def test_folders_globs_and_bad_frames_in_a_stream(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((4, 4), i * 50, np.uint8))
    (tmp_path / "f3.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [p.name for p in list_frames(tmp_path)] == ["f0.png", "f1.png", "f2.png", "f3.png"]
    assert [p.name for p in list_frames(str(tmp_path / "f[12].png"))] == ["f1.png", "f2.png"]
    frames = list(iter_frames(tmp_path))
    assert [n for n, _ in frames] == ["f0.png", "f1.png", "f2.png", "f3.png"]
    assert isinstance(frames[3][1], FrameError) and int(frames[2][1][0, 0]) == 100
    looped = [n for n, _ in iter_frames(tmp_path, max_frames=6, loop=True)]
    assert looped == ["f0.png", "f1.png", "f2.png", "f3.png", "f0.png", "f1.png"]
    with pytest.raises(FrameError, match="no such file or folder"):
        list_frames(tmp_path / "missing")
    with pytest.raises(FrameError, match="no frames"):
        list_frames(str(tmp_path / "*.jpg"))


def test_video_file_frames(tmp_path):
    path = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for i in range(4):
        frame = np.zeros((24, 32, 3), np.uint8)
        frame[..., 2] = 60 * i  # red channel in BGR
        writer.write(frame)
    writer.release()
    frames = list(iter_frames(path))
    assert [n for n, _ in frames] == [f"drive_{i:06d}" for i in range(4)]
    assert frames[3][1].shape == (24, 32, 3) and abs(int(frames[3][1][..., 0].mean()) - 180) < 8  # RGB order
    assert len(list(iter_frames(path, max_frames=2))) == 2
    assert len(list(iter_frames(path, max_frames=10, loop=True))) == 10


def test_unopenable_camera_yields_an_error(tmp_path):
    name, frame = next(iter_frames("/dev/video97"))
    assert isinstance(frame, FrameError) and "video97" in str(frame)


def test_an_unlistable_folder_under_a_recursive_glob_is_named_not_dropped(tmp_path, monkeypatch):
    """glob's `**` passes over a folder it cannot list without a word; the scan names it instead.
    (Root ignores chmod 000, so the refusal is injected where os.walk and glob list folders.)"""
    import os

    from marsedge.data.frames import scan_frames

    good, locked = tmp_path / "sol100", tmp_path / "sol101"
    for folder in (good, locked):
        folder.mkdir()
        cv2.imwrite(str(folder / "frame.png"), np.zeros((8, 8), np.uint8))
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = scan_frames(f"{tmp_path}/**/*.png")
    assert scan.files == [good / "frame.png"]
    assert scan.skipped == [(locked, "cannot list folder: Permission denied")]
