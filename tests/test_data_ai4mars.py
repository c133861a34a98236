"""The AI4Mars reader: a generated tree, and hand-made trees for the edge cases."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from marsedge.data.ai4mars import (
    SPLITS,
    AI4MarsDataset,
    available_splits,
    image_stem,
    list_items,
    mask_stem,
)
from marsedge.errors import DataError, FrameError
from marsedge.terrain import BACKGROUND, BEDROCK, IGNORE_INDEX, ROVER, SAND, SOIL

STEM = "NLA_397681455EDR_F0020000AUT_04096M1"


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def msl_frame(root, stem=STEM, label=None, rover=None, far=None, gold=None):
    msl = root / "msl"
    write(msl / "images/edr" / f"{stem}.JPG", np.full((8, 8), 120, np.uint8))
    if label is not None:
        write(msl / "labels/train" / f"{stem}.png", label)
    if gold is not None:
        write(msl / "labels/test/masked-gold-min3-100agree" / f"{stem}_merged.png", gold)
    if rover is not None:
        write(msl / "images/mxy" / f"{mask_stem(stem, 'MXY')}.png", rover)
    if far is not None:
        write(msl / "images/rng-30m" / f"{mask_stem(stem, 'RNG')}.png", far)


def test_names():
    assert image_stem(f"{STEM}_merged.png") == STEM
    assert image_stem("NLF_0100_0675473036_393ECM_N0040372NCAM00406_01_295J01_merged3.png").endswith("295J01")
    assert image_stem(f"{STEM}.png") == STEM
    assert mask_stem(STEM, "MXY") == "NLA_397681455MXY_F0020000AUT_04096M1"
    assert mask_stem(STEM, "RNG") == "NLA_397681455RNG_F0020000AUT_04096M1"


def test_generated_tree_splits(tiny_ai4mars):
    counts = {
        split: len(AI4MarsDataset(tiny_ai4mars, split).items) for split in available_splits(tiny_ai4mars)
    }
    assert counts == {"train": 16, "gold-min1": 6, "gold-min2": 6, "gold-min3": 6, "m2020-train": 6}
    unlabelled = list_items(tiny_ai4mars, "unlabelled")
    assert len(unlabelled) == 3 and all(i.label is None for i in unlabelled)
    # the gold sets hold the same images; none of them is a train image
    gold = {i.name for i in list_items(tiny_ai4mars, "gold-min1")}
    assert gold == {i.name for i in list_items(tiny_ai4mars, "gold-min3")}
    assert not gold & {i.name for i in list_items(tiny_ai4mars, "train")}


def test_generated_tree_samples(tiny_ai4mars):
    sample = AI4MarsDataset(tiny_ai4mars, "train")[0]
    assert sample.image.dtype == np.uint8 and sample.image.shape == (96, 96)
    assert sample.label.shape == (96, 96) and sample.mission == "msl"
    assert set(np.unique(sample.label)) <= {0, 1, 2, 3, 4, 5, 255}
    m2020 = AI4MarsDataset(tiny_ai4mars, "m2020-train")[0]
    assert m2020.image.shape == (96, 128, 3) and m2020.mission == "m2020"
    assert not np.isin(m2020.label, [ROVER, BACKGROUND]).any()  # M2020 has no masks
    # every MSL frame of the synthetic set has a range mask; it is folded in as class 5
    assert any((s.label == BACKGROUND).any() for s in AI4MarsDataset(tiny_ai4mars, "gold-min1"))


def test_four_class_mode_masks_to_ignore(tiny_ai4mars):
    six = AI4MarsDataset(tiny_ai4mars, "gold-min1")
    four = AI4MarsDataset(tiny_ai4mars, "gold-min1", four_class=True)
    for i in range(len(six)):
        a, b = six[i].label, four[i].label
        masked = np.isin(a, [ROVER, BACKGROUND])
        assert (b[masked] == IGNORE_INDEX).all()
        np.testing.assert_array_equal(a[~masked], b[~masked])
        assert b.max() <= 3 or (b[b > 3] == IGNORE_INDEX).all()


def test_masks_fold_into_classes_range_wins(tmp_path):
    label = np.full((8, 8), SOIL, np.uint8)
    label[0, 0] = IGNORE_INDEX
    rover = np.zeros((8, 8), np.uint8)
    rover[6:, :] = 1
    far = np.zeros((8, 8), np.uint8)
    far[:2, :] = 1
    far[7, 7] = 1  # overlaps the rover: range wins
    msl_frame(tmp_path, label=label, rover=rover, far=far)
    out = AI4MarsDataset(tmp_path, "train")[0].label
    assert (out[6:, :7] == ROVER).all() and out[7, 7] == BACKGROUND
    assert (out[:2] == BACKGROUND).all() and (out[2:6] == SOIL).all()


def test_missing_mask_means_nothing_masked(tmp_path):
    label = np.full((8, 8), BEDROCK, np.uint8)
    msl_frame(tmp_path, label=label)  # no mxy, no rng file
    item = list_items(tmp_path, "train")[0]
    assert item.rover_mask is None and item.range_mask is None
    np.testing.assert_array_equal(AI4MarsDataset(tmp_path, "train")[0].label, label)


def test_missing_image_names_label_and_image(tmp_path):
    msl_frame(tmp_path, label=np.zeros((8, 8), np.uint8))
    write(tmp_path / "msl/labels/train/NLA_1EDR_X.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError) as err:
        list_items(tmp_path, "train")
    message = str(err.value)
    assert "labels/train/NLA_1EDR_X.png" in message and "images/edr/NLA_1EDR_X" in message


def test_gold_merged_names_find_their_image(tmp_path):
    gold = np.full((8, 8), SAND, np.uint8)
    msl_frame(tmp_path, gold=gold)
    items = list_items(tmp_path, "gold-min3")
    assert [i.name for i in items] == [STEM] and items[0].image.name == f"{STEM}.JPG"
    assert (AI4MarsDataset(tmp_path, "gold-min3")[0].label == SAND).all()


def test_m2020_names_and_later_release_layout(tmp_path):
    stem = "NLF_0100_0675473036_393ECM_N0040372NCAM00406_01_295J01"
    write(tmp_path / "m2020/images/ncam" / f"{stem}.png", np.zeros((6, 8, 3), np.uint8))
    write(tmp_path / "m2020/labels/NAV" / f"{stem}_merged3.png", np.full((6, 8), SOIL, np.uint8))
    # MSL nested under msl/ncam/ as in later releases
    nested = tmp_path / "msl" / "ncam"
    write(nested / "images/edr" / f"{STEM}.JPG", np.zeros((8, 8), np.uint8))
    write(nested / "labels/train" / f"{STEM}.png", np.zeros((8, 8), np.uint8))
    assert available_splits(tmp_path) == ["train", "m2020-train"]
    sample = AI4MarsDataset(tmp_path, "m2020-train")[0]
    assert sample.name == stem and sample.image.shape == (6, 8, 3) and sample.mission == "m2020"
    assert len(AI4MarsDataset(tmp_path, "train")) == 1


def test_mer_test_split(tmp_path):
    stem = "1N128285276EFF0454P1837L0M1"
    write(tmp_path / "mer/images/eff" / f"{stem}.JPG", np.zeros((8, 8), np.uint8))
    write(
        tmp_path / "mer/labels/test/masked-gold-min1-100agree" / f"{stem}_merged.png",
        np.zeros((8, 8), np.uint8),
    )
    sample = AI4MarsDataset(tmp_path, "mer-test")[0]
    assert sample.mission == "mer" and sample.name == stem


def test_bad_labels_name_the_file(tmp_path):
    msl_frame(tmp_path, label=np.full((8, 8), 7, np.uint8))
    with pytest.raises(DataError, match=r"labels/train/.*\.png has value 7"):
        AI4MarsDataset(tmp_path, "train")[0]
    msl_frame(tmp_path, label=np.zeros((4, 8), np.uint8))
    with pytest.raises(DataError, match=r"\.png is 8x4, its image is 8x8"):
        AI4MarsDataset(tmp_path, "train")[0]


def test_listing_is_lazy_and_reading_reports_the_frame(tmp_path):
    msl_frame(tmp_path, label=np.zeros((8, 8), np.uint8))
    image = tmp_path / "msl/images/edr" / f"{STEM}.JPG"
    image.write_bytes(b"")  # listing never opens it ...
    dataset = AI4MarsDataset(tmp_path, "train")
    assert len(dataset) == 1
    with pytest.raises(FrameError, match=str(image)):  # ... reading does
        dataset[0]


def test_unknown_split_and_missing_root(tmp_path):
    with pytest.raises(DataError, match="unknown split 'validation'"):
        list_items(tmp_path, "validation")
    with pytest.raises(DataError, match="dataset folder not found"):
        list_items(tmp_path / "nope", "train")
    with pytest.raises(DataError, match="label folder not found"):
        list_items(tmp_path, "train")
    assert "unlabelled" in SPLITS
