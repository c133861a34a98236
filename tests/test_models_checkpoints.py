"""Checkpoints: self-describing, weights_only-loadable, atomic; partial loads report what they did."""

import numpy as np
import pytest
import torch

from marsedge.data.preprocess import PreprocessSpec
from marsedge.errors import ModelError
from marsedge.models import (
    ModelConfig,
    build_model,
    load_checkpoint,
    load_model,
    load_weights,
    save_checkpoint,
)
from marsedge.terrain import class_table

CFG = ModelConfig("mnv2_0.35", "deeplabv3plus", output_stride=16, num_classes=6, head_channels=16,
                  separable=True)
SPEC = PreprocessSpec(64, 64, channels=1)


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    model = build_model(CFG)
    model(torch.rand(4, 1, 64, 64))  # a training-mode pass moves the BN statistics off their defaults
    path = save_checkpoint(tmp_path / "student.pt", model, CFG, SPEC,
                           extra={"epoch": 3, "miou": np.float32(0.5),
                                  "optimizer": {"step": torch.tensor(7)}})
    return model.eval(), path


def test_round_trip_rebuilds_the_model_from_the_file_alone(trained):
    model, path = trained
    loaded, ckpt = load_model(path)
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert ckpt.model_config == CFG.to_dict()
    assert ckpt.class_table == class_table(6)
    assert PreprocessSpec.from_dict(ckpt.preprocess) == SPEC
    assert ckpt.extra["epoch"] == 3 and ckpt.extra["miou"] == pytest.approx(0.5)
    assert ckpt.extra["optimizer"]["step"].item() == 7


def test_file_is_plain_data_for_weights_only_loading(trained):
    _, path = trained
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format_version", "state_dict", "model_config", "class_table", "preprocess", "extra"}
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())


def test_save_is_atomic_and_leaves_no_temporary_files(trained, tmp_path):
    model, path = trained
    save_checkpoint(path, model, CFG, SPEC)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.pt"]


def test_unstorable_extra_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ModelError, match=r"extra\.callback"):
        save_checkpoint(tmp_path / "x.pt", build_model(CFG), CFG, SPEC, extra={"callback": print})


def test_missing_garbage_and_foreign_files_are_model_errors_naming_the_file(tmp_path):
    with pytest.raises(ModelError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ModelError, match="garbage.pt"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(ModelError, match=r"foreign.pt: not a marsedge checkpoint"):
        load_model(foreign)


def test_backbone_only_load_reports_head_keys_as_outside_and_keeps_the_head(trained):
    source, path = trained
    ckpt = load_checkpoint(path)
    other = build_model(ModelConfig("mnv2_0.35", "deeplabv3", head_channels=8))  # different head
    head_before = {k: v.clone() for k, v in other.head.state_dict().items()}
    report = load_weights(other, ckpt.state_dict, part="backbone")
    assert report.missing == [] and report.unexpected == []
    assert len(report.loaded) == len(other.backbone.state_dict())
    for key, value in other.backbone.state_dict().items():
        assert torch.equal(value, source.backbone.state_dict()[key])
    for key, value in other.head.state_dict().items():
        assert torch.equal(value, head_before[key])


def test_head_only_load_reports_missing_and_unexpected_keys(trained):
    _, path = trained
    ckpt = load_checkpoint(path)
    head_sd = {k: v for k, v in ckpt.state_dict.items() if k.startswith("head.") and "decoder.1" not in k}
    head_sd["head.extra_layer.weight"] = torch.zeros(3)
    model = build_model(CFG)
    report = load_weights(model, head_sd, part="head")
    assert report.unexpected == ["head.extra_layer.weight"]
    assert report.missing and all(k.startswith("head.decoder.1.") for k in report.missing)
    with pytest.raises(ModelError, match="missing"):
        load_weights(model, head_sd, part="head", strict=True)


def test_shape_mismatch_names_the_key(trained):
    _, path = trained
    ckpt = load_checkpoint(path)
    seven_classes = build_model(ModelConfig(**{**CFG.to_dict(), "num_classes": 7}))
    with pytest.raises(ModelError, match=r"head\.classifier\.weight has shape \(6, 16, 1, 1\)"):
        load_weights(seven_classes, ckpt.state_dict)


def test_colour_checkpoint_loads_into_a_grey_model_with_its_first_conv_summed(tmp_path):
    torch.manual_seed(0)
    colour_cfg = ModelConfig(**{**CFG.to_dict(), "in_channels": 3})
    colour = build_model(colour_cfg)
    colour(torch.rand(4, 3, 64, 64))
    path = save_checkpoint(tmp_path / "colour.pt", colour, colour_cfg, PreprocessSpec(64, 64, channels=3))
    grey = build_model(CFG)
    report = load_weights(grey, load_checkpoint(path).state_dict, strict=True)
    assert report.adapted == ["backbone.features.0.0.weight"]
    image = torch.rand(2, 1, 64, 64)
    expected = colour.eval()(image.repeat(1, 3, 1, 1))
    torch.testing.assert_close(grey.eval()(image), expected, atol=1e-4, rtol=1e-4)
