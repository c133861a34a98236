"""Heads and the assembled models: forward + backward of each teacher/student config, head maths."""

import pytest
import torch
import torch.nn.functional as F

from marsedge.errors import ConfigError
from marsedge.models import HEADS, LinearProbe, ModelConfig, ProjectionMLP, build_model, count_parameters
from marsedge.models.heads import ASPPSeedHead, atrous_rates

# narrow stand-ins of the project's teachers (SimCLRv2 ResNets) and student (MobileNetV2)
TEACHERS = ["r26_0.25x_sk1", "r50_0.25x_sk0"]
STUDENT = "mnv2_0.35"


@pytest.mark.parametrize(("backbone", "head", "separable", "output_stride"), [
    *[(t, h, False, 16) for t in TEACHERS for h in ("aspp_seed", "deeplabv3", "deeplabv3plus")],
    ("r18_0.25x_sk0", "deeplabv3", False, 8),
    (STUDENT, "deeplabv3plus", True, 16),
    (STUDENT, "deeplabv3", False, 32),
    (STUDENT, "linear", False, 16),
])
def test_forward_backward_gives_input_sized_logits_and_gradients_everywhere(backbone, head, separable,
                                                                           output_stride):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone, head, output_stride, num_classes=6, in_channels=1, head_channels=32,
                      separable=separable)
    model = build_model(cfg)
    x = torch.rand(2, 1, 64, 64)
    logits, feats = model.forward_features(x)
    assert logits.shape == (2, 6, 64, 64)
    assert {"stem", "layer1", "layer2", "layer3", "layer4", "low", "out", "head"} <= set(feats)
    F.cross_entropy(logits, torch.randint(0, 6, (2, 64, 64))).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trainable)
    # the first conv learns: a gradient reaches all the way back through backbone and head
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0
    model.eval()
    torch.testing.assert_close(model(x), model.forward_features(x)[0])


def test_teacher_of_the_multi_mission_paper_has_288m_parameters():
    with torch.device("meta"):
        teacher = build_model(ModelConfig("r101_2x_sk1", "deeplabv3", output_stride=16))
    assert round(count_parameters(teacher) / 1e6) == 288


def test_separable_head_is_much_smaller():
    plain = build_model(ModelConfig(STUDENT, "deeplabv3plus", head_channels=64))
    separable = build_model(ModelConfig(STUDENT, "deeplabv3plus", head_channels=64, separable=True))
    assert count_parameters(separable.head) < count_parameters(plain.head) / 3


def test_atrous_rates_scale_with_the_output_stride():
    assert atrous_rates(16) == (6, 12, 18)
    assert atrous_rates(8) == (12, 24, 36)
    assert atrous_rates(32) == (3, 6, 9)
    head = build_model(ModelConfig("r18_0.25x_sk0", "deeplabv3", output_stride=8, head_channels=8)).head
    assert [b[0].dilation[0] for b in head.aspp.branches[1:4]] == [12, 24, 36]


def test_aspp_seed_classifier_before_resize_equals_resize_before_classifier():
    """The docstring's claim: 1x1 conv and bilinear resizing commute, so the cheap order is exact."""
    torch.manual_seed(0)
    head = ASPPSeedHead({"out": 16}, num_classes=6, channels=8).eval()
    feats = {"out": torch.rand(2, 16, 8, 8)}
    logits, concat = head(feats)
    cheap = F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
    paper = head.classifier(F.interpolate(concat, size=(64, 64), mode="bilinear", align_corners=False))
    torch.testing.assert_close(cheap, paper, atol=1e-5, rtol=1e-5)
    assert concat.shape[1] == 3 * 8  # three atrous branches, concatenated


def test_deeplabv3plus_fuses_the_stride_4_features():
    model = build_model(ModelConfig(STUDENT, "deeplabv3plus", head_channels=16)).eval()
    x = torch.rand(1, 1, 64, 64)
    _, feats = model.forward_features(x)
    assert feats["head"].shape[-2:] == feats["low"].shape[-2:] == (16, 16)


def test_projection_mlp_matches_simclr_v2():
    torch.manual_seed(0)
    mlp = ProjectionMLP(64, out_dim=16, num_layers=3)
    assert [k for k in mlp.state_dict() if k.endswith("weight")] == [
        "layers.0.weight", "layers.1.weight", "layers.3.weight", "layers.4.weight", "layers.6.weight",
        "layers.7.weight"]
    assert not mlp.layers[7].bias.requires_grad  # the output BN has no learnt shift (center=False)
    h = torch.rand(8, 64)
    assert mlp(h).shape == (8, 16)
    assert mlp(h, upto=1).shape == (8, 64) and (mlp(h, upto=1) >= 0).all()  # after the first ReLU
    assert ProjectionMLP(64, 16, num_layers=1)(h).shape == (8, 16)
    with pytest.raises(ValueError):
        ProjectionMLP(64, 16, num_layers=4)


def test_linear_probe_pools_then_classifies():
    probe = LinearProbe(32, 10)
    x = torch.rand(3, 32, 5, 5)
    torch.testing.assert_close(probe(x), probe.fc(x.mean(dim=(2, 3))))


def test_bad_head_or_config_key_is_named():
    with pytest.raises(ConfigError, match=r"model.head.*deeplabv3plus"):
        build_model(ModelConfig("mnv2_0.35", "deeplab_v3"))
    with pytest.raises(ConfigError, match="model.hed"):
        build_model({"backbone": "mnv2_0.35", "hed": "deeplabv3"})
    assert set(HEADS) == {"aspp_seed", "deeplabv3", "deeplabv3plus", "linear"}


@pytest.mark.slow
def test_full_size_teacher_runs_one_512_frame_on_cpu():
    torch.manual_seed(0)
    teacher = build_model(ModelConfig("r101_2x_sk1", "deeplabv3", output_stride=16)).eval()
    with torch.inference_mode():
        logits = teacher(torch.rand(1, 1, 512, 512))
    assert logits.shape == (1, 6, 512, 512) and torch.isfinite(logits).all()
