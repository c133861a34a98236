"""Backbones: published parameter counts (built on the meta device), output strides, SK and ResNet-D."""

import pytest
import torch
import torch.nn.functional as F

from marsedge.errors import ConfigError
from marsedge.models import BACKBONES, build_backbone, count_parameters
from marsedge.models.resnet import ResNetDPool, SelectiveKernel


def meta_params(name: str, in_channels: int = 3) -> tuple[int, int]:
    """(parameters, final channels) of a backbone built on the meta device (no memory, no time)."""
    with torch.device("meta"):
        backbone = build_backbone(name, in_channels=in_channels)
    return count_parameters(backbone), backbone.out_channels["out"]


@pytest.mark.parametrize(("name", "torchvision_params"), [
    ("r50_1x_sk0", 25_557_032),   # torchvision.models.resnet50()
    ("r101_1x_sk0", 44_549_160),  # torchvision.models.resnet101()
    ("r152_1x_sk0", 60_192_808),  # torchvision.models.resnet152()
    ("mnv2_1.0", 3_504_872),      # torchvision.models.mobilenet_v2()
])
def test_plain_backbones_match_torchvision_with_their_classifier(name, torchvision_params):
    params, channels = meta_params(name)
    assert params + channels * 1000 + 1000 == torchvision_params


@pytest.mark.parametrize(("name", "millions"), [
    # SimCLRv2 (Chen et al. 2020), Table: parameter counts of the ResNet bodies
    ("r50_1x_sk0", 24), ("r50_1x_sk1", 35), ("r50_2x_sk0", 94), ("r50_2x_sk1", 140),
    ("r101_1x_sk1", 65), ("r101_2x_sk1", 257), ("r152_3x_sk1", 795),
])
def test_simclr_v2_bodies_match_the_published_table(name, millions):
    params, _ = meta_params(name)
    assert round(params / 1e6) == millions


@pytest.mark.parametrize("name", ["r18_0.25x_sk0", "r26_0.25x_sk1", "mnv2_0.35"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_stage_features_follow_the_output_stride(name, output_stride):
    backbone = build_backbone(name, output_stride=output_stride, in_channels=1)
    feats = backbone(torch.rand(2, 1, 64, 64))
    assert set(feats) == {"stem", "layer1", "layer2", "layer3", "layer4", "low", "out"}
    expected_strides = {"stem": 2, "layer1": 4, "layer2": 8, "layer3": min(16, output_stride),
                        "layer4": output_stride}
    for stage, stride in expected_strides.items():
        assert backbone.strides[stage] == stride
        assert feats[stage].shape == (2, backbone.out_channels[stage], 64 // stride, 64 // stride), stage
    assert feats["low"] is feats["layer1"] and feats["out"] is feats["layer4"]


@pytest.mark.parametrize("name", ["r26_0.25x_sk1", "mnv2_0.5"])
def test_dilation_keeps_the_weights_so_os32_checkpoints_load_at_os8(name):
    coarse = build_backbone(name, output_stride=32)
    fine = build_backbone(name, output_stride=8)
    fine.load_state_dict(coarse.state_dict(), strict=True)  # same keys, same shapes


def test_one_channel_input_builds_a_one_channel_first_conv():
    assert build_backbone("r50_0.25x_sk1", in_channels=1).stem.conv1.weight.shape[1] == 1
    assert build_backbone("r50_0.25x_sk0", in_channels=3).stem.conv1.weight.shape == (16, 3, 7, 7)
    assert build_backbone("mnv2_0.35", in_channels=1).features[0][0].weight.shape[1] == 1


def test_sk_nets_use_the_deep_stem_and_resnet_d_shortcuts():
    sk = build_backbone("r50_0.5x_sk1")
    assert [conv.out_channels for conv in (sk.stem.conv1, sk.stem.conv2, sk.stem.conv3)] == [16, 16, 32]
    shortcut = sk.layer2[0].downsample
    assert isinstance(shortcut[0], ResNetDPool) and shortcut[1].stride == (1, 1)
    plain = build_backbone("r50_0.5x_sk0")
    assert plain.stem.conv1.kernel_size == (7, 7) and plain.layer2[0].downsample[0].stride == (2, 2)
    # the SK attention is max(32, C/16) wide: 32 for narrow stages, C/16 for wide ones
    assert build_backbone("r50_0.5x_sk1").layer1[0].sk.fc1.out_channels == 32
    with torch.device("meta"):
        assert build_backbone("r50_2x_sk1").layer4[0].sk.fc1.out_channels == 1024 // 16


def test_selective_kernel_with_neutral_attention_averages_its_two_paths():
    torch.manual_seed(0)
    sk = SelectiveKernel(8, 8).eval()
    torch.nn.init.zeros_(sk.fc2.weight)  # equal logits -> softmax weights 1/2, 1/2
    x = torch.rand(2, 8, 10, 10)
    a, b = F.relu(sk.bn(sk.conv(x))).chunk(2, dim=1)
    torch.testing.assert_close(sk(x), (a + b) / 2)


def test_selective_kernel_attention_picks_a_path_per_channel():
    torch.manual_seed(0)
    sk = SelectiveKernel(4, 4).eval()
    with torch.no_grad():  # logits: +big for path a, -big for path b, independent of the input
        sk.fc2.weight.zero_()
        sk.fc_bn.bias.fill_(1.0)
        sk.fc2.weight[:4] = 50.0
        sk.fc2.weight[4:] = -50.0
    x = torch.rand(1, 4, 6, 6)
    a, _ = F.relu(sk.bn(sk.conv(x))).chunk(2, dim=1)
    torch.testing.assert_close(sk(x), a)


def test_resnet_d_pooling_follows_tensorflow_padding():
    x = torch.rand(1, 3, 6, 6)
    torch.testing.assert_close(ResNetDPool(2)(x), F.avg_pool2d(x, 2))
    # stride 1 ('SAME'): the pad is left out of the mean, so a constant map stays constant to the border
    constant = torch.full((1, 2, 5, 7), 3.0)
    torch.testing.assert_close(ResNetDPool(1)(constant), constant)


def test_unknown_backbone_names_the_key_the_nearest_name_and_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        build_backbone("r101_2x_sk2")
    message = str(err.value)
    assert "model.backbone" in message and "did you mean 'r101_2x_sk1'" in message and "mnv2_1.0" in message
    with pytest.raises(ConfigError, match="output_stride"):
        build_backbone("mnv2_1.0", output_stride=4)


def test_registry_holds_the_papers_names():
    for name in ("r50_1x_sk0", "r101_2x_sk1", "r152_3x_sk1", "r50_0.25x_sk0", "r18_0.25x_sk0",
                 "r26_0.5x_sk1", "mnv2_1.0", "mnv2_0.5", "mnv2_0.35"):
        assert name in BACKBONES
