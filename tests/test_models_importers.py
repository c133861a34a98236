"""Importers: state dicts in torchvision's and the SimCLRv2 converter's layouts load back exactly."""

import pytest
import torch

from marsedge.cli import main as cli_main
from marsedge.errors import ModelError
from marsedge.models import ProjectionMLP, build_backbone, load_model, load_weights
from marsedge.models.importers import import_simclr_v2, import_torchvision, simclr_key_map


def randomised(backbone):
    """Random BN parameters and statistics on top of the random conv init (zero-init residual gammas
    included), so a wrong mapping, even between two tensors of one shape, cannot pass by accident."""
    with torch.no_grad():
        for key, value in backbone.state_dict().items():
            if key.endswith("running_var"):
                value.copy_(torch.rand_like(value) + 0.5)
            elif key.endswith(("running_mean", "bias")):
                value.copy_(torch.randn_like(value) * 0.1)
            elif value.dim() == 1:  # BN gamma
                value.copy_(torch.rand_like(value) * 0.5 + 0.5)
    return backbone.eval()


def same_outputs(a, b, x):
    with torch.no_grad():
        fa, fb = a(x), b(x)
    return all(torch.allclose(fa[k], fb[k], atol=1e-5, rtol=1e-4) for k in fa)


def test_torchvision_resnet_with_colour_first_conv_imports_into_a_grey_model():
    torch.manual_seed(0)
    colour = randomised(build_backbone("r18_0.25x_sk0", in_channels=3))
    # torchvision's layout: conv1/bn1 at the top, layerN as ours, a 1000-class fc
    tv = {k.removeprefix("stem."): v for k, v in colour.state_dict().items()}
    tv["fc.weight"], tv["fc.bias"] = torch.rand(1000, 128), torch.rand(1000)
    assert "conv1.weight" in tv and "layer2.0.downsample.0.weight" in tv
    grey = build_backbone("r18_0.25x_sk0", in_channels=1).eval()
    load_weights(grey, import_torchvision(tv, grey), strict=True)
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        got, want = grey(image), colour(image.repeat(1, 3, 1, 1))
    for stage in got:
        torch.testing.assert_close(got[stage], want[stage], atol=1e-4, rtol=1e-4)


def test_torchvision_mobilenet_v2_imports_without_its_classifier():
    torch.manual_seed(0)
    source = randomised(build_backbone("mnv2_0.35", in_channels=3))
    tv = dict(source.state_dict())
    tv["classifier.1.weight"], tv["classifier.1.bias"] = torch.rand(1000, 1280), torch.rand(1000)
    target = build_backbone("mnv2_0.35", in_channels=3).eval()
    load_weights(target, import_torchvision(tv, target), strict=True)
    assert same_outputs(target, source, torch.rand(1, 3, 64, 64))


def test_torchvision_weights_refuse_an_sk_backbone():
    with pytest.raises(ModelError, match="sk0"):
        import_torchvision({}, build_backbone("r50_0.25x_sk1"))


@pytest.mark.parametrize("name", ["r50_0.25x_sk1", "r50_0.25x_sk0"])
def test_simclr_v2_converter_layout_loads_back_identically(name):
    torch.manual_seed(0)
    source = randomised(build_backbone(name, in_channels=3))
    mapping = simclr_key_map(source)
    resnet = {mapping[k]: v for k, v in source.state_dict().items()}
    resnet["fc.weight"], resnet["fc.bias"] = torch.rand(1000, 512), torch.rand(1000)
    head = ProjectionMLP(512, 128, num_layers=3).state_dict()
    target = build_backbone(name, in_channels=3).eval()
    backbone_sd, head_sd = import_simclr_v2({"resnet": resnet, "head": head}, target)
    load_weights(target, backbone_sd, strict=True)
    assert same_outputs(target, source, torch.rand(1, 3, 64, 64))
    ProjectionMLP(512, 128, num_layers=3).load_state_dict(head_sd, strict=True)


def test_simclr_v2_key_names_are_the_converters():
    """Pinned against Separius/SimCLRv2-Pytorch resnet.py: Stem / Blocks / Projection / SelectiveKernel."""
    sk = simclr_key_map(build_backbone("r50_0.25x_sk1", in_channels=3))
    theirs = set(sk.values())
    for key in ["net.0.0.weight", "net.0.1.0.running_var", "net.0.2.weight", "net.0.4.weight",
                "net.0.5.0.bias",
                "net.1.blocks.0.projection.shortcut.2.weight", "net.1.blocks.0.projection.bn.0.weight",
                "net.4.blocks.2.net.0.weight", "net.4.blocks.2.net.1.0.weight",
                "net.4.blocks.2.net.2.main_conv.0.weight", "net.4.blocks.2.net.2.main_conv.1.0.running_mean",
                "net.4.blocks.2.net.2.mixing_conv.0.weight", "net.4.blocks.2.net.2.mixing_conv.1.0.weight",
                "net.4.blocks.2.net.2.mixing_conv.2.weight", "net.4.blocks.2.net.3.weight",
                "net.4.blocks.2.net.4.0.weight"]:
        assert key in theirs, key
    pairs = {"stem.bn2.weight": "net.0.3.0.weight", "stem.conv3.weight": "net.0.4.weight",
             "layer1.0.sk.fc2.weight": "net.1.blocks.0.net.2.mixing_conv.2.weight",
             "layer1.0.sk.bn.running_var": "net.1.blocks.0.net.2.main_conv.1.0.running_var",
             "layer3.4.bn3.bias": "net.3.blocks.4.net.4.0.bias",
             "layer2.0.downsample.2.running_mean": "net.2.blocks.0.projection.bn.0.running_mean"}
    assert {k: sk[k] for k in pairs} == pairs
    plain = set(simclr_key_map(build_backbone("r50_0.25x_sk0", in_channels=3)).values())
    for key in ["net.0.0.weight", "net.0.1.0.weight", "net.1.blocks.0.projection.shortcut.weight",
                "net.3.blocks.5.net.2.weight", "net.3.blocks.5.net.3.0.weight",
                "net.3.blocks.5.net.5.0.weight"]:
        assert key in plain, key


def test_simclr_v2_import_into_the_wrong_backbone_fails_naming_a_key():
    source = build_backbone("r50_0.25x_sk1", in_channels=3)
    resnet = {simclr_key_map(source)[k]: v for k, v in source.state_dict().items()}
    with pytest.raises(ModelError, match=r"net\."):
        import_simclr_v2({"resnet": resnet}, build_backbone("r101_0.25x_sk1", in_channels=3))
    with pytest.raises(ModelError, match="no 'resnet' key"):
        import_simclr_v2({"state_dict": {}}, source)


def test_cli_import_writes_a_checkpoint_with_the_imported_backbone(tmp_path, capsys):
    torch.manual_seed(0)
    source = randomised(build_backbone("r50_0.25x_sk1", in_channels=3))
    resnet = {simclr_key_map(source)[k]: v for k, v in source.state_dict().items()}
    foreign = tmp_path / "r50_0.25x_sk1.pth"
    torch.save({"resnet": resnet, "head": ProjectionMLP(512, 128).state_dict()}, foreign)
    out = tmp_path / "imported.pt"
    code = cli_main(["models", "import", str(foreign), "--format", "simclrv2", "--backbone", "r50_0.25x_sk1",
                     "--head", "deeplabv3", "--head-channels", "16", "--in-channels", "1", "--size", "64",
                     "-o", str(out)])
    assert code == 0 and "wrote" in capsys.readouterr().out
    model, ckpt = load_model(out)
    expected = source.stem.conv1.weight.sum(dim=1, keepdim=True)  # colour first conv summed to grey
    torch.testing.assert_close(model.backbone.stem.conv1.weight, expected)
    torch.testing.assert_close(model.backbone.layer4[1].sk.fc2.weight, source.layer4[1].sk.fc2.weight)
    assert ckpt.extra["format"] == "simclrv2" and "layers.0.weight" in ckpt.extra["projection_head"]
