"""Release 0.6: the generated layout and names, every split counted, MER test.csv pairing,
label_keys.json, broken pairings named, and the generator's PDS3/PDS4 copies read back."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

from marsedge.cli import main
from marsedge.data.ai4mars import AI4MarsDataset, available_splits, list_items
from marsedge.data.frames import list_frames, read_frame
from marsedge.data.sampling import clock_group
from marsedge.data.stats import dataset_stats, format_stats
from marsedge.errors import DataError
from marsedge.synthetic.navcam import SynthOptions, generate


@pytest.fixture(scope="module")
def release06(tmp_path_factory):
    root = tmp_path_factory.mktemp("ai4mars06")
    for mission, n in (("msl", 8), ("m2020", 6), ("mer", 6)):
        opts = SynthOptions(
            str(root), mission, n=n, size=64, seed=1, test_fraction=1 / 3, release="0.6", pds=1, workers=1
        )
        generate(opts, progress=False)
    return root


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_every_split_listed_with_its_count(release06):
    counts = {s: len(list_items(release06, s)) for s in available_splits(release06)}
    assert counts == {
        "train": 5,
        "gold-min1": 3,
        "gold-min2": 3,
        "gold-min3": 3,
        "mer-train": 4,
        "mer-test-min2": 2,
        "mer-test-min3": 2,
        "m2020-train": 4,
        "m2020-test": 2,
    }
    assert len(list_items(release06, "mer-test")) == 2  # mer-test names the min3 set
    stats = dataset_stats(release06)
    assert {s: v["images"] for s, v in stats["splits"].items()} == counts
    assert "mer-test-min3" in format_stats(stats)


def test_real_style_names(release06):
    msl = [i.name for i in list_items(release06, "train")]
    assert all(re.fullmatch(r"NLB_\d{9}EDR_F\d{7}NCAM\d{5}M1", n) for n in msl)
    m2020 = [i.name for i in list_items(release06, "m2020-train")]
    assert all(re.fullmatch(r"NLF_\d{4}_\d{10}_\d{3}ECM_N\d{7}NCAM\d{5}_01_295J", n) for n in m2020)
    assert all(clock_group(n)[0] == "sol" for n in m2020) and clock_group(msl[0])[0] == "sclk"
    assert (release06 / "msl/ncam/images/edr" / f"{msl[0]}.JPG").is_file()
    assert json.loads((release06 / "label_keys.json").read_text())["3"] == "big rock"


def test_mer_test_labels_pair_through_test_csv(release06):
    rows = (release06 / "mer/labels/test/masked-gold-min3-100agree/test.csv").read_text().split()
    assert len(rows) == 2 and all(r.startswith("MER_TEST_") and r.endswith("M1.JPG") for r in rows)
    items = list_items(release06, "mer-test-min2")
    assert all(i.label.stem.startswith("MER_TEST_") and i.image.parent.name == "test" for i in items)
    sample = AI4MarsDataset(release06, "mer-test-min3")[0]
    assert sample.mission == "mer" and sample.image.shape == sample.label.shape == (64, 64)


def test_m2020_test_is_greyscale_and_dense(release06):
    test = AI4MarsDataset(release06, "m2020-test")
    train = AI4MarsDataset(release06, "m2020-train")
    assert test[0].image.ndim == 2 and train[0].image.ndim == 3
    dense = np.mean([(s.label != 255).mean() for s in test])
    assert dense > np.mean([(s.label != 255).mean() for s in train])


def test_pds_copies_read_back_as_the_frame(release06):
    for mission in ("msl", "m2020"):
        pds3, pds4 = (
            list_frames(release06 / "pds" / mission / "pds3"),
            list_frames(release06 / "pds" / mission / "pds4"),
        )
        assert len(pds3) == len(pds4) == 1 and pds3[0].suffix == ".IMG" and pds4[0].suffix == ".xml"
        image = next(p for p in release06.rglob(f"{pds3[0].stem}.*") if p.suffix in (".JPG", ".png"))
        frame = read_frame(image)
        assert b"LBLSIZE=" in pds3[0].read_bytes()
        np.testing.assert_array_equal(read_frame(pds3[0]), frame)
        np.testing.assert_array_equal(read_frame(pds4[0]), frame)


def test_a_pairing_that_finds_no_image_names_folder_and_label(tmp_path):
    gold = tmp_path / "mer/labels/test/masked-gold-min3-100agree"
    write(tmp_path / "mer/images/test/1N128285276EFF0454P1837L0M1.JPG", np.zeros((8, 8), np.uint8))
    write(gold / "MER_TEST_0001.png", np.zeros((8, 8), np.uint8))
    (gold / "test.csv").write_text("MER_TEST_0001,1N128285276EFF0454P1837L0M1.JPG\n")
    assert [i.image.name for i in list_items(tmp_path, "mer-test-min3")] == [
        "1N128285276EFF0454P1837L0M1.JPG"
    ]
    (gold / "test.csv").write_text("MER_TEST_0001,1N999999999EFF0454P1837L0M1.JPG\n")
    with pytest.raises(DataError, match=r"MER_TEST_0001\.png in .*masked-gold-min3-100agree has no image"):
        list_items(tmp_path, "mer-test-min3")
    empty = tmp_path / "mer/labels/test/masked-gold-min2-100agree"
    empty.mkdir(parents=True)
    with pytest.raises(DataError, match=f"label folder {empty} holds no label PNGs"):
        list_items(tmp_path, "mer-test-min2")


def test_label_keys_mismatch_names_both(tmp_path):
    write(tmp_path / "m2020/images/ncam/a.JPG", np.zeros((8, 8, 3), np.uint8))
    write(tmp_path / "m2020/images/ncam/b.jpeg", np.zeros((8, 8, 3), np.uint8))
    write(tmp_path / "m2020/labels/NAV/a_merged3.png", np.zeros((8, 8), np.uint8))
    write(tmp_path / "m2020/labels/NAV/b_merged.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "label_keys.json").write_text(json.dumps({"soil": 0, "bedrock": 1, "sand": 2, "big_rock": 3}))
    assert [i.image.name for i in list_items(tmp_path, "m2020-train")] == ["a.JPG", "b.jpeg"]
    (tmp_path / "label_keys.json").write_text(
        json.dumps({"0": "soil", "1": "sand", "2": "bedrock", "255": "null"})
    )
    with pytest.raises(
        DataError, match=r"label_keys\.json maps label 1 to 'sand', the class table has 'bedrock'"
    ):
        list_items(tmp_path, "m2020-train")


def test_m2020_test_folder_is_configurable(tmp_path):
    write(tmp_path / "m2020/images/test/x.png", np.zeros((8, 8), np.uint8))
    write(tmp_path / "expert/x_merged.png", np.ones((8, 8), np.uint8))
    items = list_items(tmp_path, "m2020-test", label_dir="expert")
    assert [i.name for i in items] == ["x"] and (
        AI4MarsDataset(tmp_path, "m2020-test", label_dir="expert")[0].label == 1
    ).all()


def test_synth_cli_release_flags(tmp_path, capsys):
    args = ["data", "synth", "--out", str(tmp_path), "--n", "2", "--size", "64", "--workers", "1", "--quiet"]
    assert main([*args, "--mission", "mer"]) == 2 and "--mission" in capsys.readouterr().err
    assert main([*args, "--mission", "mer", "--release", "0.6", "--test-fraction", "0.5"]) == 0
    assert len(list_items(tmp_path, "mer-test")) == 1 and len(list_items(tmp_path, "mer-train")) == 1
