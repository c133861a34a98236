"""Labels and pairing files as a hostile user makes them: a colour-coded label is refused naming the
file, a palette PNG is read by its indices (and spoken of in indices), a label that does not fit its
image reaches the user as one line even from a DataLoader worker, a non-UTF-8 test.csv is one line,
and a PDS3 label whose image lines do not fill the records it declares is refused."""

from __future__ import annotations

import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest
from test_data_pds import WORDS, write_pds3
from test_train_protocol import TEACHER_YAML, TINY

from marsedge.cli import main
from marsedge.data.ai4mars import list_items, read_label
from marsedge.data.frames import read_frame
from marsedge.errors import DataError, FrameError
from marsedge.train import cli as train_cli

# a colour-coded label tool's table: soil, bedrock, sand, big rock, null
COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (0, 0, 128), 255: (192, 192, 192)}


@pytest.fixture
def tree(tiny_ai4mars, tmp_path):
    root = tmp_path / "ai4mars"
    shutil.copytree(tiny_ai4mars, root)
    return root


def stats(root) -> list[str]:
    return ["data", "stats", str(root), "--chart", str(root / "c.png"), "--json", str(root / "s.json")]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def palette_png(indices: np.ndarray, palette: dict[int, tuple[int, int, int]]) -> bytes:
    """An 8-bit palette PNG (colour type 3) written by hand: PNG spec, IHDR/PLTE/IDAT/IEND."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    h, w = indices.shape
    table = b"".join(bytes(palette.get(i, (i, 255 - i, 7))) for i in range(256))
    raw = b"".join(b"\0" + row.tobytes() for row in indices.astype(np.uint8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
            + chunk(b"PLTE", table) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_a_colour_coded_label_is_refused_naming_the_file(tree, capsys):
    item = list_items(tree, "train")[0]
    ids = read_label(item.label)
    rgb = np.zeros((*ids.shape, 3), np.uint8)
    for value, colour in COLOURS.items():
        rgb[ids == value] = colour
    cv2.imwrite(str(item.label), rgb[..., ::-1])
    assert main(stats(tree)) == 1
    err = one_line(capsys)
    assert str(item.label) in err and "colour-coded" in err


def test_a_palette_label_is_read_by_its_indices(tree):
    item = list_items(tree, "train")[0]
    ids = read_label(item.label)
    assert set(np.unique(ids)) - {255}, "the fixture label holds classes"
    item.label.write_bytes(palette_png(ids, COLOURS))
    np.testing.assert_array_equal(read_label(item.label), ids)
    bad = ids.copy()
    bad[0, 0] = 7
    item.label.write_bytes(palette_png(bad, COLOURS))
    with pytest.raises(DataError, match=r"has palette index 7; AI4Mars labels use 0\.\.3 and 255"):
        read_label(item.label)


def test_a_bad_label_read_by_a_loader_worker_is_one_line(tree, tmp_path, capsys):
    for item in list_items(tree, "train"):  # every label: whichever the first batch reads
        label = cv2.imread(str(item.label), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(item.label), label[:-16])
    args = ["--config", TEACHER_YAML, f"data.root={tree}", f"run.out_dir={tmp_path / 'runs'}", *TINY,
            "num_workers=1", "run.max_steps=1"]
    assert train_cli.main(args) == 1
    err = one_line(capsys)
    assert "Traceback" not in err and "DataLoader worker" not in err
    assert err.startswith(f"error: label {tree}") and " is 96x80, its " in err  # image or mask: 96x96


def test_a_pairing_csv_that_is_not_utf8_is_one_line(tree, capsys):
    folder = tree / "mer/labels/test/masked-gold-min3-100agree"
    folder.mkdir(parents=True)
    (tree / "mer/images/test").mkdir(parents=True)
    item = list_items(tree, "train")[0]
    shutil.copy(item.label, folder / "1N123_merged.png")
    (folder / "test.csv").write_bytes(b"1N123,1N123EFF\xff\xfe.JPG\n")
    with pytest.raises(DataError, match=r"test\.csv: not a UTF-8 CSV") as err:
        list_items(tree, "mer-test")
    assert "\n" not in str(err.value)
    assert main(stats(tree)) == 1
    assert "test.csv: not a UTF-8 CSV" in one_line(capsys)


def test_a_pds3_label_whose_lines_do_not_fill_its_records_is_refused(tmp_path):
    path = tmp_path / "sheared.IMG"
    write_pds3(path, WORDS)  # 8 samples x 2 bytes: RECORD_BYTES 16
    data = path.read_bytes()
    # the same file, its label now claiming 6 samples a line in the same 16-byte records
    path.write_bytes(data.replace(b"LINE_SAMPLES = 8", b"LINE_SAMPLES = 6"))
    with pytest.raises(FrameError, match=r"sheared\.IMG: an image line is 12 bytes .*RECORD_BYTES 16") as e:
        read_frame(path)
    assert "\n" not in str(e.value)
    path.write_bytes(data)
    assert read_frame(path).shape == (6, 8)
