"""Distillation through the shared loop: the teacher stays frozen, cached logits stand in for the live
teacher, a student identical to its teacher has zero KD loss, and configs that cannot work are refused."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.utils.data import Dataset

from marsedge.data.preprocess import PreprocessSpec
from marsedge.distill.config import DistillConfig, DistillSection
from marsedge.distill.losses import PixelKDLoss
from marsedge.distill.objective import DistillObjective, StudentWithAdapters, build_terms
from marsedge.distill.teacher import FrozenTeacher, stage_channels
from marsedge.errors import ConfigError, ModelError
from marsedge.models.build import ModelConfig, build_model
from marsedge.models.checkpoints import save_checkpoint
from marsedge.train.engine.distributed import DistContext
from marsedge.train.engine.loop import build_train_loader, fit
from marsedge.train.engine.state import Artifact
from marsedge.train.losses import CrossEntropyLoss

SIZE = 32
SPEC = PreprocessSpec(height=SIZE, width=SIZE)
TINY = ModelConfig(backbone="mnv2_0.35", head="deeplabv3plus", head_channels=16, separable=True)


class Frames(Dataset):
    """Random frames; the second half carries no label (all 255), like added unlabelled frames."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, SIZE, SIZE, generator=g)
        self.labels = (self.images[:, 0] * 4).long().clamp(max=3)
        self.labels[n // 2:] = 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "index": i}


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    torch.manual_seed(1)
    model = build_model(TINY)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, model, TINY, SPEC)
    return path


def make_cfg(tmp_path, **distill) -> DistillConfig:
    cfg = DistillConfig(name="student", epochs=2, batch_size=4, num_workers=0, model=TINY)
    cfg.data.preprocess = SPEC
    cfg.data.augment.enabled = False
    cfg.run.out_dir = str(tmp_path)
    cfg.run.progress = False
    cfg.run.log_every = 1
    cfg.run.device = "cpu"
    cfg.optim.lr = 0.05
    cfg.distill = DistillSection(teacher="unused", **distill)
    return cfg


def distill(cfg, teacher, student, dataset=None, report_first_step=False):
    ctx = DistContext()
    terms = build_terms(cfg.distill, stage_channels(student, 1), teacher.channels, 6)
    wrapper = StudentWithAdapters(student, terms)
    objective = DistillObjective(cfg.distill, CrossEntropyLoss(), teacher, report_first_step)
    loader = build_train_loader(dataset or Frames(), cfg, ctx)
    return fit(cfg, wrapper, objective, loader, ctx=ctx, artifact=Artifact(student, cfg.model, SPEC))


def test_teacher_is_frozen_and_unchanged_after_distillation(tmp_path, teacher_ckpt):
    teacher = FrozenTeacher.from_checkpoint(teacher_ckpt, torch.device("cpu"))
    before = copy.deepcopy(teacher.model.state_dict())  # buffers too: BN statistics must not move
    torch.manual_seed(2)
    student = build_model(TINY)
    student_before = copy.deepcopy(student.state_dict())
    cfg = make_cfg(tmp_path, kd_weight=1.0, cwd_weight=1.0, feature_weight=1.0,
                   feature_pairs={"low": "low", "head": "head"})
    summary = distill(cfg, teacher, student)
    assert summary["step"] == 4
    assert not teacher.model.training
    for name, p in teacher.model.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    for key, value in teacher.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert changed, "the student did not learn"
    logged = (tmp_path / "student" / "metrics.jsonl").read_text()
    assert "loss_kd" in logged and "loss_cwd" in logged and "loss_feature" in logged


def test_cached_logits_replace_the_live_teacher(tmp_path, teacher_ckpt):
    teacher = FrozenTeacher.from_checkpoint(teacher_ckpt, torch.device("cpu"))
    frames = Frames()
    batch = {"image": frames.images[:4], "label": frames.labels[:4]}
    cached = {**batch, "teacher_logits": teacher(batch["image"])[0].half()}
    torch.manual_seed(3)
    student = StudentWithAdapters(build_model(TINY).eval(), build_terms(
        DistillSection(kd_weight=1.0, cwd_weight=0.5), {}, {}, 6))
    state = type("State", (), {"model": student})()
    section = DistillSection(kd_weight=1.0, cwd_weight=0.5)
    live_loss, live_logs = DistillObjective(section, CrossEntropyLoss(), teacher)(student, batch, state)
    cache_loss, cache_logs = DistillObjective(section, CrossEntropyLoss(), None)(student, cached, state)
    assert cache_loss.item() == pytest.approx(live_loss.item(), rel=1e-3)
    assert set(cache_logs) == {"loss_gt", "loss_kd", "loss_cwd"}


def test_kd_is_zero_when_the_student_is_the_teacher(teacher_ckpt):
    teacher = FrozenTeacher.from_checkpoint(teacher_ckpt, torch.device("cpu"))
    student = StudentWithAdapters(copy.deepcopy(teacher.model), build_terms(
        DistillSection(kd_weight=1.0, cwd_weight=1.0), {}, {}, 6))
    section = DistillSection(gt_weight=0.0, kd_weight=1.0, cwd_weight=1.0)
    batch = {"image": Frames().images[:2], "label": Frames().labels[:2]}
    state = type("State", (), {"model": student})()
    loss, logs = DistillObjective(section, CrossEntropyLoss(), teacher)(student, batch, state)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    assert logs["loss_kd"] == pytest.approx(0.0, abs=1e-5)


def test_the_first_step_reports_each_term_and_its_gradient_on_the_logits(tmp_path, teacher_ckpt, capsys):
    teacher = FrozenTeacher.from_checkpoint(teacher_ckpt, torch.device("cpu"))
    torch.manual_seed(2)
    cfg = make_cfg(tmp_path, kd_weight=2.0, temperature=1.0)
    distill(cfg, teacher, build_model(TINY), report_first_step=True)
    report = json.loads((tmp_path / "student" / "loss_terms.json").read_text())
    assert report["step"] == 0 and set(report["terms"]) == {"gt", "kd"}
    assert report["terms"]["kd"]["weight"] == 2.0
    assert all(term["value"] > 0 and term["grad_norm_logits"] > 0 for term in report["terms"].values())
    out = capsys.readouterr().out
    assert out.count("loss terms at the first step") == 1 and "kd 2 x" in out


def test_confidence_threshold_keeps_kd_to_the_pixels_the_teacher_is_sure_of():
    images = Frames().images[:2]
    t_logits = 3 * torch.randn(2, 6, SIZE, SIZE, generator=torch.Generator().manual_seed(5))  # as cached
    confidence = torch.softmax(t_logits, dim=1).amax(dim=1)
    threshold = float(confidence.median())  # half the pixels pass
    section = DistillSection(gt_weight=0.0, kd_weight=1.0, temperature=2.0, confidence_threshold=threshold)
    torch.manual_seed(3)
    student = StudentWithAdapters(build_model(TINY).eval(), build_terms(section, {}, {}, 6))
    state = type("State", (), {"model": student})()
    batch = {"image": images, "teacher_logits": t_logits}
    loss, _ = DistillObjective(section, CrossEntropyLoss(), None)(student, batch, state)
    with torch.no_grad():
        s_logits = student(images)
    sure = confidence >= threshold
    assert 0 < int(sure.sum()) < sure.numel()
    assert loss.item() == pytest.approx(PixelKDLoss(2.0)(s_logits, t_logits, sure).item(), rel=1e-5)
    assert loss.item() != pytest.approx(PixelKDLoss(2.0)(s_logits, t_logits).item(), rel=1e-2)


def test_configs_that_cannot_work_are_refused(tmp_path):
    cfg = make_cfg(tmp_path, cache_dir=str(tmp_path / "cache"))
    cfg.data.augment.enabled = True
    with pytest.raises(ConfigError, match="un-augmented"):
        cfg.validate()
    cfg = make_cfg(tmp_path, feature_weight=1.0)
    with pytest.raises(ConfigError, match="feature_pairs"):
        cfg.validate()
    cfg = make_cfg(tmp_path, gt_weight=0.0, kd_weight=0.0)
    with pytest.raises(ConfigError, match="at least one"):
        cfg.validate()
    with pytest.raises(ConfigError, match="unlabelled_per_labelled"):
        make_cfg(tmp_path, unlabelled_per_labelled=-1).validate()
    with pytest.raises(ConfigError, match="confidence_threshold"):
        make_cfg(tmp_path, confidence_threshold=1.0).validate()
    with pytest.raises(ConfigError, match="feature_pairs.nope"):
        section = DistillSection(feature_weight=1.0, feature_pairs={"nope": "low"})
        build_terms(section, {"low": 8}, {"low": 8}, 6)


def test_teacher_with_other_preprocessing_is_refused(teacher_ckpt):
    teacher = FrozenTeacher.from_checkpoint(teacher_ckpt, torch.device("cpu"))
    teacher.check_student_input(PreprocessSpec(height=64, width=64), 6)  # only the size differs: fine
    with pytest.raises(ModelError, match="gain"):
        teacher.check_student_input(PreprocessSpec(height=SIZE, width=SIZE, gain=1.0), 6)
    with pytest.raises(ModelError, match="num_classes"):
        teacher.check_student_input(SPEC, 4)


def test_teacher_resizes_a_student_input_of_another_size(teacher_ckpt):
    teacher = FrozenTeacher.from_checkpoint(teacher_ckpt, torch.device("cpu"))
    logits, _ = teacher(torch.rand(2, 1, 48, 48))
    assert logits.shape == (2, 6, 48, 48) and logits.dtype == torch.float32


def test_channel_wise_maps_average_with_the_logits_and_train_their_adapters(tmp_path, teacher_ckpt):
    """cwd_pairs adds channel-wise distillation of stage maps: the cwd term is the mean of the logits'
    and every map's ChannelWiseLoss (through its 1x1 adapter), and those adapters are trained."""
    teacher = FrozenTeacher.from_checkpoint(teacher_ckpt, torch.device("cpu"))
    torch.manual_seed(4)
    student = build_model(TINY)
    section = DistillSection(gt_weight=0.0, kd_weight=0.0, cwd_weight=1.0, cwd_pairs={"head": "low"})
    terms = build_terms(section, stage_channels(student, 1), teacher.channels, 6)
    adapter = terms["cwd_maps"]["head"].adapter  # student head 16 ch -> teacher low 8 ch: a 1x1 conv
    assert isinstance(adapter, torch.nn.Conv2d) and (adapter.in_channels, adapter.out_channels) == (16, 8)
    wrapper = StudentWithAdapters(student, terms).eval()  # eval: no dropout between the two forwards
    batch = {"image": Frames().images[:2], "label": Frames().labels[:2]}
    state = type("State", (), {"model": wrapper})()

    def call(x, method="forward"):  # what the loop hands objectives: any method of the module by name
        return getattr(wrapper, method)(x)

    loss, logs = DistillObjective(section, CrossEntropyLoss(), teacher)(call, batch, state)
    with torch.no_grad():
        logits, feats = student.forward_features(batch["image"])
        t_logits, t_feats = teacher(batch["image"], with_features=True)
        on_map = terms["cwd_maps"]["head"](feats["head"], t_feats["low"])
        expected = (terms["cwd"](logits, t_logits) + on_map) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["loss_cwd"] == pytest.approx(expected.item(), rel=1e-5)

    cfg = make_cfg(tmp_path, kd_weight=0.0, cwd_weight=1.0, cwd_pairs={"head": "low"})
    before = copy.deepcopy(adapter.weight)
    ctx = DistContext()
    fit(cfg, wrapper, DistillObjective(cfg.distill, CrossEntropyLoss(), teacher),
        build_train_loader(Frames(), cfg, ctx), ctx=ctx, artifact=Artifact(student, cfg.model, SPEC))
    assert not torch.equal(adapter.weight, before), "the map adapter did not learn"


def test_channel_wise_map_configs_that_cannot_work_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="cwd_weight > 0"):
        make_cfg(tmp_path, cwd_pairs={"head": "head"}).validate()
    cfg = make_cfg(tmp_path, cwd_weight=1.0, cwd_pairs={"head": "head"}, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="live teacher"):
        cfg.validate()
    with pytest.raises(ConfigError, match="cwd_pairs.head.*teacher has no stage 'nope'"):
        build_terms(DistillSection(cwd_weight=1.0, cwd_pairs={"head": "nope"}), {"head": 16}, {"head": 16}, 6)
