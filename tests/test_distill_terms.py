"""Registered distillation terms: the `distill.terms` form and the earlier keys give bit-identical
losses, and a new term is one class with a decorator (the test term below is configured by name,
validated, trained with and checkpointed without touching any other module)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from test_distill_cli import args, save_teacher
from torch import nn

from marsedge.config import from_dict, to_dict
from marsedge.data.preprocess import PreprocessSpec
from marsedge.distill import config as distill_config
from marsedge.distill.cli import main
from marsedge.distill.config import DistillConfig, DistillSection
from marsedge.distill.objective import DistillObjective, StudentWithAdapters, build_terms
from marsedge.distill.teacher import FrozenTeacher, stage_channels
from marsedge.distill.terms import DistillTerm, register_term
from marsedge.errors import ConfigError
from marsedge.models.build import ModelConfig, build_model
from marsedge.models.checkpoints import load_checkpoint, save_checkpoint
from marsedge.train.engine.rundir import config_changes
from marsedge.train.losses import CrossEntropyLoss

TINY = ModelConfig(backbone="mnv2_0.35", head="deeplabv3plus", head_channels=16, separable=True)


class CallCount(nn.Module):
    """Running state of the test term: how often it was computed (a resume must restore it)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))


@dataclass
class LogitL1Options:
    weight: float = 1.0
    scale: float = 1.0


@register_term("logit_l1", options=LogitL1Options, stateful=True)
class LogitL1Term(DistillTerm):
    """scale * mean |z_student - z_teacher| over the logits; counts its calls."""

    def check(self, key):
        if self.options.scale <= 0:
            raise ConfigError(f"config key '{key('scale')}' must be positive, got {self.options.scale}")

    def build(self, channels, key):  # its running state (a term without state needs no build)
        return {"logit_l1_calls": CallCount()}

    def loss(self, modules, x):
        modules["logit_l1_calls"].calls += 1
        return self.options.scale * (x.logits - x.teacher_logits).abs().mean()


def objective_on(section: DistillSection, teacher: FrozenTeacher, images: torch.Tensor, labels: torch.Tensor):
    """Loss and logs of one step, with the student and adapters built from the same seed."""
    torch.manual_seed(7)
    student = build_model(TINY).eval()
    terms = build_terms(section, stage_channels(student, 1), teacher.channels, 6)
    stateful = build_terms(section, stage_channels(student, 1), teacher.channels, 6, stateful=True)
    wrapper = StudentWithAdapters(student, terms)
    state = type("State", (), {"model": wrapper})()

    def call(x, method="forward"):
        return getattr(wrapper, method)(x)

    objective = DistillObjective(section, CrossEntropyLoss(), teacher, stateful_modules=stateful)
    return objective(call, {"image": images, "label": labels}, state)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, build_model(TINY), TINY, PreprocessSpec(height=32, width=32))
    return FrozenTeacher.from_checkpoint(path, torch.device("cpu"))


def test_earlier_keys_and_the_terms_form_give_bit_identical_losses(teacher, capsys, monkeypatch):
    monkeypatch.setattr(distill_config, "_noted", set())  # the note comes once per key and process
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 32, 32, generator=g)
    labels = (images[:, 0] * 4).long().clamp(max=3)
    sure = float(torch.softmax(teacher(images)[0], dim=1).amax(dim=1).median())  # KD on half the pixels
    earlier = DistillSection(gt_weight=0.5, kd_weight=1.0, temperature=2.0, confidence_threshold=sure,
                             cwd_weight=0.5, cwd_tau=3.0, cwd_pairs={"head": "low"}, feature_weight=0.25,
                             feature_pairs={"low": "low"})
    assert "distill.kd_weight -> distill.terms.kd.weight" in capsys.readouterr().err
    DistillSection(kd_weight=2.0)
    assert capsys.readouterr().err == ""
    terms = DistillSection(gt_weight=0.5, terms={
        "feature": {"weight": 0.25, "pairs": {"low": "low"}},  # the order written does not matter
        "cwd": {"weight": 0.5, "tau": 3.0, "pairs": {"head": "low"}},
        "kd": {"weight": 1.0, "temperature": 2.0, "confidence_threshold": sure}})
    assert earlier.terms == {"kd": {"weight": 1.0, "temperature": 2.0, "confidence_threshold": sure},
                             "cwd": {"weight": 0.5, "tau": 3.0, "pairs": {"head": "low"}},
                             "feature": {"weight": 0.25, "pairs": {"low": "low"}}}
    assert earlier.kd_weight is None and earlier.uses_stage_maps
    loss_a, logs_a = objective_on(earlier, teacher, images, labels)
    loss_b, logs_b = objective_on(terms, teacher, images, labels)
    assert torch.equal(loss_a, loss_b) and logs_a == logs_b
    assert set(logs_a) == {"loss_gt", "loss_kd", "loss_cwd", "loss_feature"}
    assert all(value > 0 for value in logs_a.values())


def test_earlier_keys_keep_their_defaults():
    assert DistillSection(cwd_tau=2.0).terms == {
        "kd": {"weight": 1.0, "temperature": 4.0, "confidence_threshold": 0.0},
        "cwd": {"weight": 0.0, "tau": 2.0, "pairs": {}}}
    assert list(DistillSection(cwd_tau=2.0).active_terms()) == ["kd"]



def test_the_new_key_overrides_an_earlier_one_and_says_so(capsys, tmp_path):
    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/demo/student.yaml").read_text())
    del demo["distill"]["terms"]
    demo["distill"].update(kd_weight=1.0, temperature=1.0)  # a config written with the earlier keys
    config = tmp_path / "earlier.yaml"
    config.write_text(yaml.safe_dump(demo))
    assert main(["--config", str(config), "distill.terms.kd.temperature=4", "--print-config"]) == 0
    out, err = capsys.readouterr()
    assert "'distill.temperature' ignored: 'distill.terms.kd.temperature' is given" in err
    assert "temperature: 4.0" in out and "temperature: 1.0" not in out


def test_a_new_term_is_configured_by_name_and_validated(teacher):
    section = DistillSection(gt_weight=0.0, terms={"logit_l1": {"scale": 2.0}})
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    loss, logs = objective_on(section, teacher, images, torch.zeros(2, 32, 32, dtype=torch.long))
    torch.manual_seed(7)
    with torch.no_grad():
        expected = 2.0 * (build_model(TINY).eval()(images) - teacher(images)[0]).abs().mean()
    assert set(logs) == {"loss_logit_l1"}
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not section.uses_stage_maps


def test_a_new_term_trains_through_distill_py_and_its_state_is_checkpointed(tiny_ai4mars, tmp_path, capsys):
    teacher = save_teacher(tmp_path / "teacher.pt", seed=0)
    run = args(tiny_ai4mars, tmp_path, teacher, "distill.terms={logit_l1: {weight: 0.5, scale: 2.0}}",
               "run.log_every=1")
    assert main(run) == 0
    run_dir = tmp_path / "runs/demo_student"
    assert '"loss_logit_l1"' in (run_dir / "metrics.jsonl").read_text()
    assert "logit_l1 0.5 x" in capsys.readouterr().out  # the first-step report names it
    last = load_checkpoint(run_dir / "last.pt").extra["train"]
    assert int(last["extra_state"]["term_logit_l1_calls"]["calls"]) == last["step"] > 0
    assert not any("logit_l1" in key for key in last["model"])  # state kept out of the trained model


@pytest.mark.parametrize(("override", "named"), [
    ("distill.terms={logit_l1: {scale: -1}}", "distill.terms.logit_l1.scale"),
    ("distill.terms={logit_l1: {sclae: 2}}", "distill.terms.logit_l1.sclae"),
    ("distill.terms={nope: {}}", "distill.terms.nope"),
    ("distill.terms={kd: {temperature: 0}}", "distill.terms.kd.temperature"),
])
def test_bad_term_options_are_named(override, named, capsys):
    config = str(Path(__file__).resolve().parents[1] / "configs/demo/student.yaml")
    assert main(["--config", config, "distill.kd_weight=null", "distill.temperature=null",
                 "distill.cwd_weight=null", override, "--print-config"]) == 2
    assert named in capsys.readouterr().err


def test_a_run_recorded_under_the_earlier_keys_resumes_under_the_new_form(tmp_path):
    section = {"teacher": "t.pt", "kd_weight": 1.0, "temperature": 2.0, "confidence_threshold": 0.0,
               "cwd_weight": 0.0, "cwd_tau": 4.0, "cwd_pairs": {}, "feature_weight": 0.0, "feature_pairs": {}}
    recorded = to_dict(DistillConfig())
    recorded["distill"].pop("terms")  # config.yaml as a run wrote it before `terms` existed
    recorded["distill"].update(section)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recorded))
    (tmp_path / "last.pt").touch()
    same_yaml = from_dict(DistillConfig, {"distill": section})
    assert config_changes(same_yaml, tmp_path / "last.pt") == {}
    new_form = from_dict(DistillConfig, {"distill": {"teacher": "t.pt", "terms": {
        "kd": {"temperature": 2.0}, "cwd": {"weight": 0.0}, "feature": {"weight": 0.0}}}})
    assert config_changes(new_form, tmp_path / "last.pt") == {}
    new_form.distill.terms["kd"]["temperature"] = 4.0
    with pytest.raises(ConfigError, match="distill.terms.kd.temperature 2.0 -> 4.0"):
        config_changes(new_form, tmp_path / "last.pt")


def test_a_term_needs_a_weight_and_a_name_of_its_own():
    @dataclass
    class NoWeight:
        scale: float = 1.0

    with pytest.raises(TypeError, match="weight"):
        register_term("no_weight", options=NoWeight)(type("NoWeightTerm", (DistillTerm,), {}))
    with pytest.raises(ValueError, match="registered twice"):
        register_term("kd", options=LogitL1Options)(type("OtherKD", (DistillTerm,), {}))
