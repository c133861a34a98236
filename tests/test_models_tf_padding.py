"""The ResNet stem max pool with TensorFlow 'SAME' padding (SimCLRv2's TF release) vs PyTorch's."""

import pytest
import torch
import torch.nn.functional as F

from marsedge.cli import main as cli_main
from marsedge.data.preprocess import PreprocessSpec
from marsedge.errors import ConfigError
from marsedge.models.build import ModelConfig, build_backbone, build_model
from marsedge.models.checkpoints import load_model, save_checkpoint
from marsedge.models.importers import simclr_key_map
from marsedge.models.resnet import TFSameMaxPool


def test_tf_same_pool_of_an_even_map_by_hand():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # TF SAME, 3x3/2 on 4 px: windows rows/cols {0,1,2} and {2,3,pad}; nothing padded before
    assert TFSameMaxPool(3, 2)(x)[0, 0].tolist() == [[10.0, 11.0], [14.0, 15.0]]
    # PyTorch pads one on each side: windows {pad,0,1} and {1,2,3}
    assert torch.nn.MaxPool2d(3, 2, 1)(x)[0, 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]


def test_tf_same_pool_equals_a_hand_padded_pool_and_differs_from_torch_on_even_sizes():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 48)
    tf = TFSameMaxPool(3, 2)(x)
    hand = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)  # 0 before, 1 after
    torch.testing.assert_close(tf, hand, rtol=0, atol=0)
    differ = (tf != torch.nn.MaxPool2d(3, 2, 1)(x)).float().mean()
    assert differ > 0.5  # 69 % measured on an even-sized map
    odd = torch.randn(1, 1, 33, 33)  # odd sizes: TF pads 1 before and 1 after, like PyTorch
    torch.testing.assert_close(TFSameMaxPool(3, 2)(odd), torch.nn.MaxPool2d(3, 2, 1)(odd))


def test_backbone_option_changes_only_the_stem_pool():
    torch.manual_seed(0)
    plain = build_backbone("r18_0.25x_sk0", in_channels=1)
    tf = build_backbone("r18_0.25x_sk0", in_channels=1, stem_pool_padding="tf_same")
    assert isinstance(tf.maxpool, TFSameMaxPool) and isinstance(plain.maxpool, torch.nn.MaxPool2d)
    tf.load_state_dict(plain.state_dict())  # same keys: the pool holds no weights
    plain.eval(), tf.eval()
    x = torch.randn(1, 1, 64, 64)
    a, b = plain(x), tf(x)
    torch.testing.assert_close(a["stem"], b["stem"])
    assert not torch.allclose(a["layer1"], b["layer1"])


def test_stem_pool_padding_is_refused_where_there_is_no_stem_pool():
    with pytest.raises(ConfigError, match="stem_pool_padding"):
        build_model(ModelConfig("mnv2_0.35", "deeplabv3plus", head_channels=16, stem_pool_padding="tf_same"))
    with pytest.raises(ConfigError, match="model.stem_pool_padding"):
        ModelConfig.from_dict({"backbone": "r18_0.25x_sk0", "stem_pool_padding": "valid"})


def test_old_checkpoint_without_the_field_loads_with_torch_padding(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig("r18_0.25x_sk0", "deeplabv3", head_channels=16)
    model = build_model(cfg).eval()
    path = save_checkpoint(tmp_path / "new.pt", model, cfg, PreprocessSpec(64, 64))
    data = torch.load(path, weights_only=True)
    del data["model_config"]["stem_pool_padding"]  # what checkpoints written before the field hold
    old = tmp_path / "old.pt"
    torch.save(data, old)
    loaded, ckpt = load_model(old)
    assert "stem_pool_padding" not in ckpt.model_config
    assert isinstance(loaded.backbone.maxpool, torch.nn.MaxPool2d)
    x = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(loaded(x), model(x))


def _converted_simclr(tmp_path):
    """A checkpoint in the SimCLRv2 converter's layout (`{'resnet': {net.0.0.weight: ...}}`)."""
    source = build_backbone("r50_0.25x_sk1", in_channels=3)
    resnet = {simclr_key_map(source)[k]: v for k, v in source.state_dict().items()}
    path = tmp_path / "r50_0.25x_sk1.pth"
    torch.save({"resnet": resnet}, path)
    return path


@pytest.mark.parametrize(("fmt", "expected"), [("simclrv2", "tf_same"), ("torchvision", "torch")])
def test_models_import_records_the_stem_pool_padding(tmp_path, fmt, expected):
    if fmt == "simclrv2":
        foreign, backbone = _converted_simclr(tmp_path), "r50_0.25x_sk1"
    else:
        state = build_backbone("r18_0.25x_sk0", in_channels=3).state_dict()
        state = {k.removeprefix("stem."): v for k, v in state.items()}
        foreign, backbone = tmp_path / "tv.pth", "r18_0.25x_sk0"
        torch.save(state, foreign)
    out = tmp_path / "imported.pt"
    assert cli_main(["models", "import", str(foreign), "--format", fmt, "--backbone", backbone, "--head",
                     "deeplabv3", "--head-channels", "16", "--size", "64", "-o", str(out)]) == 0
    model, ckpt = load_model(out)
    assert ckpt.model_config["stem_pool_padding"] == expected
    assert isinstance(model.backbone.maxpool, TFSameMaxPool) == (expected == "tf_same")


def test_training_from_simclrv2_weights_needs_the_tf_pool():
    from marsedge.train.config import TrainConfig

    cfg = TrainConfig()
    cfg.model.backbone = "r50_1x_sk1"
    cfg.init.checkpoint, cfg.init.format = "weights.pth", "simclrv2"
    with pytest.raises(ConfigError, match="model.stem_pool_padding"):
        cfg.validate()
    cfg.model.stem_pool_padding = "tf_same"
    cfg.validate()
