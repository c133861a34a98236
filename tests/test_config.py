"""Typed configs: unknown keys name the key and the nearest valid one; overrides; type errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from marsedge.config import apply_overrides, from_dict, read_yaml, to_dict
from marsedge.errors import ConfigError


@dataclass
class Optim:
    lr: float = 0.1
    momentum: float = 0.9


@dataclass
class Experiment:
    name: str = "demo"
    epochs: int = 10
    optim: Optim = field(default_factory=Optim)
    sizes: list[int] = field(default_factory=lambda: [128])
    mode: Literal["finetune", "pretrain"] = "finetune"
    resume: str | None = None


def test_mistyped_key_is_named_with_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'epoch' \(did you mean 'epochs'\?\)"):
        from_dict(Experiment, {"epoch": 3})
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr' \(did you mean 'lr'\?\)"):
        from_dict(Experiment, {"optim": {"lrr": 0.01}})


def test_unrelated_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"'zzz' \(valid keys: epochs, mode, name, optim, resume, sizes\)"):
        from_dict(Experiment, {"zzz": 1})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"epochs": "ten"}, "config key 'epochs': expected int, got 'ten'"),
        ({"epochs": True}, "config key 'epochs': expected int, got True"),
        ({"optim": {"lr": "fast"}}, "config key 'optim.lr': expected float"),
        ({"optim": 3}, "config key 'optim': expected a mapping"),
        ({"sizes": [64, "x"]}, r"config key 'sizes\[1\]': expected int"),
        ({"sizes": 64}, "config key 'sizes': expected a list"),
        ({"mode": "distill"}, r"config key 'mode': 'distill' is not one of \['finetune', 'pretrain'\]"),
    ],
)
def test_type_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Experiment, data)


def test_valid_values_are_converted():
    cfg = from_dict(Experiment, {"optim": {"lr": 1}, "resume": None, "sizes": [64, 96]})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.resume is None and cfg.sizes == [64, 96] and cfg.epochs == 10
    assert from_dict(Experiment, to_dict(cfg)) == cfg


def load_config(cls, path, overrides=()):
    """A config file (or the defaults) with dotted overrides, the way every loader composes them."""
    data = read_yaml(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, list(overrides)))


def test_yaml_file_with_dotted_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: teacher\nepochs: 5\noptim:\n  lr: 0.05\n")
    cfg = load_config(
        Experiment, path, ["optim.momentum=0.5", "epochs=7", "sizes=[32, 64]", "resume=last.pt"]
    )
    assert (cfg.name, cfg.epochs, cfg.optim.lr, cfg.optim.momentum) == ("teacher", 7, 0.05, 0.5)
    assert cfg.sizes == [32, 64] and cfg.resume == "last.pt"
    assert load_config(Experiment, None, ["mode=pretrain"]).mode == "pretrain"


def test_override_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrate' \(did you mean 'lr'\?\)"):
        load_config(Experiment, None, ["optim.lrate=0.1"])
    with pytest.raises(ConfigError, match="not of the form key.sub=value"):
        load_config(Experiment, None, ["epochs"])
    with pytest.raises(ConfigError, match="expected int, got 'many'"):
        load_config(Experiment, None, ["epochs=many"])
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Experiment, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(Experiment, bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Experiment, top)


def test_shipped_configs_use_the_current_distillation_keys():
    """The earlier flat keys still read (with a note); the configs we ship do not need the note."""
    from pathlib import Path

    from marsedge.distill.config import RENAMED

    configs = Path(__file__).resolve().parents[1] / "configs"
    earlier = {str(path.relative_to(configs)): sorted(set(read_yaml(path).get("distill") or {})
                                                      & set(RENAMED))
               for path in sorted(configs.rglob("*.yaml"))}
    assert {name: keys for name, keys in earlier.items() if keys} == {}
