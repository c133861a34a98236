"""MAC counting and the `marsedge models` commands."""

import pytest
from torch import nn

from marsedge.cli import main as cli_main
from marsedge.models import ModelConfig
from marsedge.models.summary import count_macs, summarize


def test_count_macs_of_known_layers():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    macs = count_macs(model, (16, 16), in_channels=1)
    dense = 16 * 16 * 8 * 9  # every output of the first conv reads 1 x 3 x 3 inputs
    depthwise = 16 * 16 * 8 * 9  # depthwise: each output reads its own channel's 3 x 3
    assert macs["total"] == dense + depthwise + 10 * 8 * 16 * 16


@pytest.mark.parametrize(("name", "published_gmacs"), [
    ("r50_1x_sk0", 4.09),  # torchvision's documented cost of resnet50 at 224x224 (MACs, reported as GFLOPS)
    ("mnv2_1.0", 0.30),    # and of mobilenet_v2
])
def test_macs_match_torchvision_at_224(name, published_gmacs):
    summary = summarize(name, 224, in_channels=3)
    fc = summary.shapes["layer4"][0] * 1000  # torchvision's number includes the classifier
    assert round((summary.macs["total"] + fc) / 1e9, 2) == published_gmacs


def test_summary_of_a_model_splits_backbone_and_head_and_lists_stage_shapes():
    summary = summarize(ModelConfig("r101_2x_sk1", "deeplabv3", output_stride=16), 512)
    assert summary.params["total"] == summary.params["backbone"] + summary.params["head"]
    assert summary.macs["total"] == summary.macs["backbone"] + summary.macs["head"]
    assert summary.shapes["layer4"] == (4096, 32, 32)  # output stride 16
    assert summary.shapes["logits"] == (6, 512, 512)
    assert 300e9 < summary.macs["total"] < 400e9
    student = summarize(ModelConfig("mnv2_1.0", "deeplabv3plus", separable=True), 512)
    assert student.macs["total"] < summary.macs["total"] / 20


def test_cli_list_and_summary(capsys):
    assert cli_main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "r101_2x_sk1" in listing and "mnv2_0.35" in listing and "deeplabv3plus" in listing
    assert cli_main(["models", "summary", "mnv2_0.35", "--head", "deeplabv3plus", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "GMACs" in out and "layer1  8 x 16 x 16" in out and "logits  6 x 64 x 64" in out


def test_cli_unknown_name_exits_2_with_the_valid_names(capsys):
    assert cli_main(["models", "summary", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.backbone: unknown backbone 'resnet50'") and "r50_1x_sk0" in err
    assert len(err.strip().splitlines()) == 1

