"""Pretraining, distillation and semisup never train on the frames a run selects on (val) or is
scored on (test), even without their labels, whatever path or link reaches them."""

from __future__ import annotations

import os

import pytest

from marsedge.config import from_dict
from marsedge.data.ai4mars import list_items
from marsedge.errors import ConfigError
from marsedge.train.supervised import training_set, validation_set


def _data(root) -> dict:
    return {"root": str(root), "val_fraction": 0.25, "val_seed": 0, "test_splits": ["gold-min3"]}


def test_pretraining_on_the_train_split_leaves_val_out_and_finds_links_to_val_frames(tiny_ai4mars, tmp_path):
    from marsedge.train.modes.pretrain import PretrainConfig, pretrain_frames

    data = from_dict(PretrainConfig, {"data": _data(tiny_ai4mars)}).data
    val = {item.image for item in validation_set(data, 0).items}
    train = {item.image for item in training_set(data, 0).items}
    assert val and train
    folder = tmp_path / "links"
    folder.mkdir()
    for i, image in enumerate(sorted(val)):  # a folder of links to val frames: one hard, the rest symbolic
        (os.link if i == 0 else os.symlink)(image, folder / f"copy_{i}.png")
    os.link(sorted(train)[0], folder / "a_train_frame.png")
    cfg = from_dict(PretrainConfig, {"data": _data(tiny_ai4mars), "pretrain": {"sources": [
        {"root": str(tiny_ai4mars), "split": "train"}, {"root": str(folder), "kind": "folder"}]}})
    frames = pretrain_frames(cfg)
    from_train = {str(f.path) for f in frames if f.source == 0}
    assert from_train == {str(p) for p in train}  # the train split less val
    assert [f.path.name for f in frames if f.source == 1] == ["a_train_frame.png"]


def test_a_source_reaching_a_test_frame_is_refused_by_its_key(tiny_ai4mars, tmp_path):
    from marsedge.distill.config import DistillConfig
    from marsedge.distill.data import build_distill_set
    from marsedge.train.modes.pretrain import PretrainConfig, pretrain_frames

    test_frame = list_items(tiny_ai4mars, "gold-min3")[0].image
    folder = tmp_path / "mixed"
    folder.mkdir()
    os.symlink(test_frame, folder / "looks_unlabelled.png")
    cfg = from_dict(PretrainConfig, {"data": _data(tiny_ai4mars), "pretrain": {"sources": [
        {"root": str(tiny_ai4mars)}, {"root": str(folder), "kind": "folder"}]}})
    with pytest.raises(ConfigError, match=r"'pretrain.sources\[1\]'.*looks_unlabelled.png.*'gold-min3'"):
        pretrain_frames(cfg)
    gold = [{"root": str(tiny_ai4mars), "split": "gold-min3"}]
    section = {"teacher": str(tmp_path / "teacher.pt"), "unlabelled": gold}
    distill = from_dict(DistillConfig, {"data": _data(tiny_ai4mars), "distill": section})
    with pytest.raises(ConfigError, match=r"'distill.unlabelled\[0\]'.*test split 'gold-min3'"):
        build_distill_set(distill)


def test_semisup_leaves_val_out_of_its_unlabelled_split_and_refuses_a_test_split(tiny_ai4mars):
    from marsedge.train.modes.semisup import SemisupConfig, unlabelled_frames

    def frames(split: str) -> set[str]:
        cfg = from_dict(SemisupConfig, {"data": _data(tiny_ai4mars), "semisup": {"unlabelled_split": split}})
        return {str(ref.path) for ref in unlabelled_frames(cfg).frames}

    data = from_dict(SemisupConfig, {"data": _data(tiny_ai4mars)}).data
    assert frames("train") == {str(item.image) for item in training_set(data, 0).items}
    assert frames("unlabelled") == {str(item.image) for item in list_items(tiny_ai4mars, "unlabelled")}
    with pytest.raises(ConfigError, match="'semisup.unlabelled_split'.*test split 'gold-min3'"):
        frames("gold-min3")
