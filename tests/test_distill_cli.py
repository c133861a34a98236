"""`distill.py` end to end on the tiny synthetic tree: labelled + unlabelled frames, teacher logits
cached once, a student checkpoint ready for export; a stale cache and a wrong mode are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from marsedge.data.preprocess import PreprocessSpec
from marsedge.distill.cache import LogitCache
from marsedge.distill.cli import main
from marsedge.io import sha256_file
from marsedge.models.build import ModelConfig, build_model
from marsedge.models.checkpoints import load_model, save_checkpoint
from marsedge.terrain import class_table

REPO = Path(__file__).resolve().parents[1]
SPEC = PreprocessSpec(height=64, width=64)
TEACHER = ModelConfig(backbone="r18_0.25x_sk0", head="deeplabv3", head_channels=16)


def save_teacher(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, build_model(TEACHER), TEACHER, SPEC)
    return path


def args(root: Path, tmp_path: Path, teacher: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs/demo/student.yaml"),
            f"data.root={root}", "data.max_train=8", "data.max_test=2", "data.test_splits=[gold-min1]",
            "data.preprocess={height: 64, width: 64, channels: 1, gain: 1.5}",
            "model.backbone=mnv2_0.35", "model.head_channels=16", "epochs=1", "batch_size=4", "num_workers=0",
            f"distill.teacher={teacher}", f"distill.cache_dir={tmp_path / 'cache'}",
            f"distill.unlabelled=[{{root: {root}, split: unlabelled}}]",
            f"run.out_dir={tmp_path / 'runs'}", "run.progress=false", "run.confusion_png=false", *extra]


def test_distill_writes_an_exportable_student_and_reuses_the_cache(tiny_ai4mars, tmp_path, capsys):
    teacher = save_teacher(tmp_path / "teacher.pt", seed=0)
    assert main(args(tiny_ai4mars, tmp_path, teacher)) == 0
    out = capsys.readouterr().out
    assert "8 labelled + 3 unlabelled frames, cached teacher" in out

    cached = sorted((tmp_path / "cache").glob("*.npy"))
    assert len(cached) == 11
    assert np.load(cached[0]).dtype == np.float16 and np.load(cached[0]).shape == (6, 64, 64)
    stamps = [p.stat().st_mtime_ns for p in cached]

    student, ckpt = load_model(tmp_path / "runs/demo_student/student.pt")
    assert ckpt.preprocess == SPEC.to_dict()
    assert ckpt.class_table == class_table(6)
    assert ckpt.model_config["backbone"] == "mnv2_0.35"
    assert ckpt.extra["distilled_from"] == str(teacher) and len(ckpt.extra["teacher_sha256"]) == 64
    assert "train" not in ckpt.extra  # no optimiser state in the export checkpoint
    assert student(torch.zeros(1, 1, 64, 64)).shape == (1, 6, 64, 64)

    # a second student run reads the cache instead of running the teacher again
    assert main(args(tiny_ai4mars, tmp_path, teacher, "name=second")) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert (tmp_path / "runs/second/student.pt").is_file()


def test_a_cache_of_another_teacher_is_refused(tiny_ai4mars, tmp_path, capsys):
    first = save_teacher(tmp_path / "first.pt", seed=0)
    other = save_teacher(tmp_path / "other.pt", seed=1)
    LogitCache(tmp_path / "cache", sha256_file(first), SPEC, 6)  # a cache the first teacher wrote
    assert main(args(tiny_ai4mars, tmp_path, other)) == 1
    err = capsys.readouterr().err
    assert "stale" in err and "teacher_sha256" in err


def test_a_config_of_another_mode_is_refused(tmp_path, capsys):
    config = tmp_path / "teacher.yaml"
    config.write_text((REPO / "configs/demo/teacher.yaml").read_text())
    assert main(["--config", str(config)]) == 2
    assert "distill.py runs student configs" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["distill.temprature=2", "distill.terms.kd.weight=-1",
                                 "distill.terms.kd.tempo=2"])
def test_bad_keys_are_named(key, tmp_path, capsys):
    code = main(["--config", str(REPO / "configs/demo/student.yaml"), key, "--print-config"])
    assert code == 2
    assert key.split("=")[0] in capsys.readouterr().err
