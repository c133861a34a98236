"""benchmarks/ as a package: every benchmark imports as `benchmarks.NAME` without path edits, the
shared scaffolding does what the benchmarks rely on, and the edge studies measure edge-run through
its public options (the writer study's variants are edge-run options; the encoder-pool study hands
edge-run a backend that replays the real model's logits)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem != "__init__")


def test_no_benchmark_edits_the_import_path():
    edits = [f"{p.name}:{i}" for p in (REPO / "benchmarks").glob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if "sys.path" in line]
    assert edits == []


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_imports_as_a_package_module(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.__doc__, f"benchmarks/{name}.py says what it measures"


def test_train_runs_a_config_through_its_mode_and_reads_a_finished_run_back(tiny_ai4mars, tmp_path):
    from benchmarks.common import finished_run, train

    config = {"mode": "finetune", "seed": 0, "epochs": 1, "batch_size": 4, "num_workers": 0,
              "model": {"backbone": "r18_0.25x_sk0", "head": "deeplabv3", "head_channels": 16},
              "data": {"root": str(tiny_ai4mars), "preprocess": {"height": 32, "width": 32}},
              "run": {"eval_every": 0, "confusion_png": False}}
    calls = []

    def figures() -> dict:
        summary = train(tmp_path, "tiny", config, resume=True)
        calls.append(summary)
        return {"steps": summary["step"], "resumed": summary["resumed"]}

    first = finished_run(tmp_path, "tiny", figures)
    assert first["steps"] > 0 and first["resumed"] is False
    assert calls[0]["seconds"] > 0 and calls[0]["cpu_seconds"] > 0
    assert (tmp_path / "configs" / "tiny.yaml").is_file() and (tmp_path / "runs/tiny/last.pt").is_file()
    assert finished_run(tmp_path, "tiny", figures) == first and len(calls) == 1  # read back, not retrained


def test_writer_study_variants_are_edge_run_options(tmp_path):
    from benchmarks.writer_study import VARIANTS
    from marsedge.edge.run import build_parser

    for name, options in VARIANTS.items():
        args = build_parser().parse_args(["in", str(tmp_path / "out"), "--model", "m.onnx", *options])
        assert args.model == "m.onnx", name


def test_backend_alone_child_prints_its_figures(edge_student):
    done = subprocess.run([sys.executable, "-m", "benchmarks.writer_study", "alone", str(edge_student[1]),
                           "--threads", "1", "--seconds", "0.2"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["fps"] > 0 and figures["calls"] >= 3 and figures["streams"] == 1


def test_edge_run_with_replayed_logits_writes_the_real_models_masks(edge_student, tiny_ai4mars, tmp_path):
    """The encoder-pool study's child: edge-run handed a ReplayBackend gives the masks the real
    model gives, and never calls the real model."""
    from benchmarks.encoder_pool import ReplayBackend, cache_logits
    from marsedge.edge.run import main
    from marsedge.runtimes.choice import open_backend

    frames = tmp_path / "frames"
    frames.mkdir()
    for path in sorted((tiny_ai4mars / "msl/images/edr").iterdir())[:3]:
        shutil.copy(path, frames / path.name)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache_logits(edge_student[1], sorted(frames.iterdir()), cache, threads=1)
    common = ["--model", str(edge_student[1]), "--threads", "1", "--streams", "1", "--backend-probe", "0",
              "--visualize", "mask"]
    assert main([str(frames), str(tmp_path / "real"), *common]) == 0

    class Counted(ReplayBackend):
        calls = 0

        def infer(self, batch: np.ndarray) -> np.ndarray:
            Counted.calls += 1
            return super().infer(batch)

    replay = Counted(open_backend(edge_student[1], threads=1), cache)
    assert main([str(frames), str(tmp_path / "replayed"), *common], backend=replay) == 0
    summary = json.loads((tmp_path / "replayed" / "summary.json").read_text())
    assert summary["frames_ok"] == 3 and summary["frames_failed"] == 0 and Counted.calls == 3
    masks = sorted((tmp_path / "real" / "masks").iterdir())
    assert len(masks) == 3
    for mask in masks:
        assert mask.read_bytes() == (tmp_path / "replayed" / "masks" / mask.name).read_bytes(), mask.name


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_each_ablation_variant_changes_the_distillation_recipe_in_its_one_ingredient(tiny_ai4mars, tmp_path):
    from benchmarks import distill_ablation as ablation
    from benchmarks import teacher_student_rows as row_configs

    args = ablation.parse_args(["--work", str(tmp_path), "--fractions", "0.5", "--max-steps", "300"])
    teacher = tmp_path / "runs" / "teacher_f0.5_s0" / "best.pt"
    pool = row_configs.unlabelled_pool(tiny_ai4mars, 0.5, 0, tmp_path / "pool_f0.5_s0")
    recipe = _flatten(row_configs.distilled(tiny_ai4mars, teacher, pool, 0.5, 0, args, 1.0))
    # what each variant must change, and what its schedule may change with it (the pooled set's
    # epochs are counted over more frames; on this tiny tree they may come out the same)
    expected = {
        "pooled": ({"distill.sampling", "batch_size"}, {"epochs", "run.eval_every", "num_workers"}),
        "no_unlabelled": ({"distill.unlabelled"}, set()),
        "t4": ({"distill.terms.kd.temperature"}, set()),
        "cwd": ({"distill.terms.cwd.weight", "distill.terms.cwd.tau"}, set()),
        "mask": ({"distill.terms.kd.confidence_threshold"}, set()),
        "third": ({"epochs", "run.early_stop_patience"}, set()),
    }
    assert set(expected) | {"pretrain_short"} == set(ablation.VARIANTS)
    for key, (must, may) in expected.items():
        variant = _flatten(ablation.variant_config(key, tmp_path, tiny_ai4mars, 0.5, args))
        changed = {k for k in recipe.keys() | variant.keys() if recipe.get(k) != variant.get(k)}
        assert must <= changed <= must | may, key
    pooled = ablation.variant_config("pooled", tmp_path, tiny_ai4mars, 0.5, args)
    labelled = row_configs.labelled_frames(tiny_ai4mars, 0.5, 0)
    frames = labelled + ablation.unlabelled_count(pooled)
    per_epoch = frames // min(16, frames)
    assert pooled["epochs"] * per_epoch >= 300 > (pooled["epochs"] - 1) * per_epoch  # the same step cap
    # a source reaching a val frame loses it in the run, so in the count that sizes its epochs
    from marsedge.config import from_dict
    from marsedge.train.config import DataConfig
    from marsedge.train.supervised import split_training_labels

    _, val = split_training_labels(from_dict(DataConfig, pooled["data"]), 0)
    (tmp_path / "links").mkdir()
    os.link(val[0].image, tmp_path / "links" / Path(val[0].image).name)
    shutil.copy(val[1].image, tmp_path / "links" / "new_frame.png")  # another file: a frame of its own
    pooled["distill"]["unlabelled"].append({"root": str(tmp_path / "links"), "kind": "folder"})
    assert labelled + ablation.unlabelled_count(pooled) == frames + 1


def _finished(work: Path, name: str, miou: float) -> None:
    """A finished benchmark run under WORK: its bench.json, as run_mode leaves it."""
    (work / "runs" / name).mkdir(parents=True)
    (work / "runs" / name / "bench.json").write_text(json.dumps(
        {"name": name, "miou": miou, "val_miou": miou, "steps": 500, "stopped_early": True, "cpu_s": 9.0}))


def test_the_ablation_report_reads_finished_variants_back_and_trains_none_under_report_only(tmp_path):
    from benchmarks import distill_ablation as ablation

    for name, miou in [("scratch_f0.1_s0", 0.5), ("teacher_densecl_f0.1_s0", 0.6),
                       ("distilled_T1_f0.1_s0_from_teacher_densecl", 0.55),
                       ("ablation_t4_f0.1_s0_from_teacher_densecl", 0.52)]:
        _finished(tmp_path, name, miou)
    flags = ["--work", str(tmp_path), "--out", str(tmp_path / "out"), "--fractions", "0.1", "--temperatures",
             "1", "--distil-from", "teacher_densecl", "--labelled", "12", "--unlabelled", "2", "--size", "64"]
    with pytest.raises(SystemExit, match="--variants: unknown variant"):
        ablation.parse_args([*flags, "--variants", "t4,t8"])
    assert ablation.main([*flags, "--report-only"]) == 0
    report = (tmp_path / "out" / "distill_ablation.md").read_text()
    assert "| t4 | KD temperature 4 (recipe: 1) | 0.5200 | -0.0300 |" in report
    assert "Not run yet: pooled, no_unlabelled, cwd, mask, third, pretrain_short." in report
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "ablation_t4_f0.1_s0_from_teacher_densecl", "distilled_T1_f0.1_s0_from_teacher_densecl",
        "scratch_f0.1_s0", "teacher_densecl_f0.1_s0"]  # nothing trained


def test_a_confirmed_variant_is_the_benchmarks_row_of_its_seed_changed_in_one_thing(tiny_ai4mars, tmp_path):
    from benchmarks import distill_ablation as ablation
    from benchmarks import teacher_student_rows as row_configs

    args = ablation.parse_args(["--work", str(tmp_path), "--fractions", "0.5", "--confirm", "mask"])
    with pytest.raises(SystemExit, match="--confirm: unknown variant"):
        ablation.parse_args(["--work", str(tmp_path), "--confirm", "pretrain_short"])  # a teacher, not a row
    teacher = tmp_path / "runs" / "teacher_f0.5_s0" / "best.pt"  # seed 0's, whatever the student's seed
    pool = row_configs.unlabelled_pool(tiny_ai4mars, 0.5, 1, tmp_path / "pool_f0.5_s1")
    expected = row_configs.distilled(tiny_ai4mars, teacher, pool, 0.5, 1, args, 1.0)
    expected["distill"]["terms"]["kd"]["confidence_threshold"] = 0.8
    assert ablation.variant_config("mask", tmp_path, tiny_ai4mars, 0.5, args, seed=1) == expected


def test_the_ablation_tables_a_confirmed_variant_over_the_seeds_against_the_same_seeds_rows(tmp_path):
    from benchmarks import distill_ablation as ablation

    runs = {"scratch_f0.1_s0": 0.50, "scratch_f0.1_s1": 0.52, "scratch_f0.1_s2": 0.51,
            "teacher_f0.1_s0": 0.6, "distilled_T1_f0.1_s0": 0.53,
            "distilled_T1_f0.1_s1_teacher_s0": 0.54, "distilled_T1_f0.1_s2_teacher_s0": 0.52,
            "ablation_mask_f0.1_s0": 0.60, "ablation_mask_f0.1_s1_teacher_s0": 0.61,
            "ablation_mask_f0.1_s2_teacher_s0": 0.60, "ablation_t4_f0.1_s1_teacher_s0": 0.9}
    for name, miou in runs.items():
        _finished(tmp_path, name, miou)
    flags = ["--work", str(tmp_path), "--out", str(tmp_path / "out"), "--fractions", "0.1", "--temperatures",
             "1", "--seeds", "3", "--labelled", "12", "--unlabelled", "2", "--size", "64", "--report-only"]
    assert ablation.main([*flags, "--confirm", "mask,t4"]) == 0
    result = json.loads((tmp_path / "out" / "distill_ablation.json").read_text())["confirmed"]
    assert result["rows"]["mask"]["miou_per_seed"] == [0.60, 0.61, 0.60]
    assert result["rows"]["student distilled"]["miou_per_seed"] == [0.53, 0.54, 0.52]
    assert result["rows"]["student from scratch"]["seeds"] == [0, 1, 2]
    assert result["verdicts"]["mask"]["beyond_noise"]  # +0.073 against 2 x 0.01
    assert result["verdicts"]["mask"]["minus_recipe"] == pytest.approx(0.0733, abs=1e-4)
    assert "t4" not in result["verdicts"]  # one seed of three: no verdict
    report = (tmp_path / "out" / "distill_ablation.md").read_text()
    assert "| mask | 0.6000 / 0.6100 / 0.6000 (seeds 0, 1, 2) | 0.6033 ± 0.0058 |" in report
    assert "mask minus the recipe: +0.0733 test mIoU over 3 seeds, beyond" in report
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(runs)  # nothing trained


# what the teacher_student report reads: the setup block, and one finished run
_SETUP = {"command": "c", "cpu": "cpu", "threads": 2, "load_average_at_write": 0.0, "patience": 5,
          "eval_steps": 100, "max_steps": 1500, "temperatures": [1.0], "intensity_baseline": {"miou": 0.1},
          "student": {"backbone": "s", "head": "h"}, "teacher": {"backbone": "t", "head": "h"},
          "student_gmacs": 1.0, "teacher_gmacs": 2.0}


def _run(miou: float, plateau: bool = True) -> dict:
    return {"miou": miou, "val_miou": miou, "steps": 900 if plateau else 1500, "stopped_early": plateau,
            "cpu_s": 1.0, "name": "r"}


def test_the_teacher_student_report_names_rows_that_stopped_at_the_cap():
    from benchmarks.teacher_student_report import ROWS, fraction_summary, markdown

    def report(teacher_plateau: bool) -> str:
        rows = {ROWS[0]: {"0": _run(0.5), "1": _run(0.52)},
                ROWS[1]: {"0": _run(0.6, teacher_plateau)}}
        result = {"setup": _SETUP, "summary": {"0.1": fraction_summary(rows)}, "cpu_hours": 0.1}
        return markdown(result, "p.png")

    assert "Not converged (teacher, SimCLR-pretrained): reached the 1500-step cap" in report(False)
    assert "1500 (cap)" in report(False)
    assert "Not converged" not in report(True)


def test_teacher_student_runs_of_another_teacher_are_other_runs(tmp_path):
    from benchmarks import teacher_student as ts

    def finished(name: str, miou: float) -> None:
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "bench.json").write_text(json.dumps({"name": name, "miou": miou}))

    for name in ("teacher_f0.1_s0", "distilled_T1_f0.1_s0", "scratch_f0.1_s0"):
        finished(name, 0.1)
    for name in ("teacher_lr0.001_f0.1_s0", "distilled_T1_f0.1_s0_teacher_lr0.001", "teacher_densecl_f0.1_s0",
                 "distilled_T1_f0.1_s0_from_teacher_densecl"):
        finished(name, 0.2)

    def rows_read(*flags: str) -> dict:
        found = {}
        args = ts.parse_args(["--work", str(tmp_path), "--report-only", "--temperatures", "1", *flags])
        ts.run_task(tmp_path, tmp_path / "data", 0.1, 0, args, lambda row, run: found.__setitem__(row, run))
        return {row: run["name"] for row, run in found.items()}

    assert rows_read() == {ts.ROWS[0]: "scratch_f0.1_s0", ts.ROWS[1]: "teacher_f0.1_s0",
                           ts.ROWS[3]: "distilled_T1_f0.1_s0", ts.ROWS[5]: "teacher_densecl_f0.1_s0"}
    assert rows_read("--teacher-recipe", "lr0.001") == {ts.ROWS[0]: "scratch_f0.1_s0",
                                                  ts.ROWS[1]: "teacher_lr0.001_f0.1_s0",
                                                  ts.ROWS[3]: "distilled_T1_f0.1_s0_teacher_lr0.001"}
    from_densecl = rows_read("--distil-from", "teacher_densecl")
    assert from_densecl[ts.ROWS[3]] == "distilled_T1_f0.1_s0_from_teacher_densecl"
    for name in ("scratch_f0.1_s0_ema0.999", "teacher_f0.1_s0_ema0.999", "distilled_T1_f0.1_s0_ema0.999"):
        finished(name, 0.3)
    assert rows_read("--ema", "0.999") == {ts.ROWS[0]: "scratch_f0.1_s0_ema0.999",
                                           ts.ROWS[1]: "teacher_f0.1_s0_ema0.999",
                                           ts.ROWS[3]: "distilled_T1_f0.1_s0_ema0.999"}


def test_ema_averages_the_weights_of_every_finetuned_row_not_pretraining(tiny_ai4mars, tmp_path):
    from benchmarks import teacher_student as ts
    from benchmarks import teacher_student_rows as row_configs

    args = ts.parse_args(["--work", str(tmp_path), "--quick", "--ema", "0.99"])
    for model in (row_configs.TEACHER, row_configs.STUDENT):
        assert row_configs.supervised(tiny_ai4mars, model, 1.0, 0, args, None)["run"]["ema"] == 0.99
    assert "ema" not in row_configs.pretrain_config(tmp_path, tiny_ai4mars, 0, 1)["run"]
    plain = ts.parse_args(["--work", str(tmp_path), "--quick"])
    assert "ema" not in row_configs.supervised(tiny_ai4mars, row_configs.STUDENT, 1.0, 0, plain, None)["run"]
    for bad in ("1", "0", "-0.5"):
        with pytest.raises(SystemExit):
            ts.parse_args(["--ema", bad])
    from benchmarks.teacher_student_report import markdown

    said = "Every row keeps an EMA of its weights (decay 0.99"
    assert said in markdown({"setup": {**_SETUP, "ema": 0.99}, "summary": {}, "cpu_hours": 0.1}, "p.png")
    assert said not in markdown({"setup": _SETUP, "summary": {}, "cpu_hours": 0.1}, "p.png")


def test_a_teacher_recipe_changes_the_teacher_rows_config_and_not_the_students(tiny_ai4mars, tmp_path):
    from benchmarks import teacher_student as ts
    from benchmarks import teacher_student_rows as row_configs

    recipe = "lr0.001_wd0.05_scale0.5-2"
    args = ts.parse_args(["--work", str(tmp_path), "--quick", "--teacher-recipe", recipe])
    teacher = row_configs.supervised(tiny_ai4mars, row_configs.TEACHER, 1.0, 0, args, None, recipe)
    student = row_configs.supervised(tiny_ai4mars, row_configs.STUDENT, 1.0, 0, args, None)
    assert (teacher["optim"]["lr"], teacher["optim"]["weight_decay"]) == (0.001, 0.05)
    assert teacher["data"]["augment"]["scale"] == [0.5, 2.0]
    assert teacher["data"]["augment"]["hflip"] == row_configs.AUGMENT["hflip"]  # the rest is kept
    assert student["optim"] == row_configs.OPTIM and student["data"]["augment"] == row_configs.AUGMENT
    assert ts.teacher_run("teacher_densecl", 0.1, 0, args.teacher_recipe) == \
        f"teacher_densecl_{recipe}_f0.1_s0"
    with pytest.raises(SystemExit):
        ts.parse_args(["--teacher-recipe", "lr0.5"])


def test_the_teacher_student_report_lists_the_teacher_runs_of_the_other_recipes(tmp_path):
    from benchmarks import teacher_student as ts
    from benchmarks.teacher_student_report import markdown

    def finished(name: str, miou: float) -> None:
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "bench.json").write_text(json.dumps(
            {"name": name, "miou": miou, "val_miou": miou - 0.01, "steps": 700, "stopped_early": True,
             "cpu_s": 5.0, "curve": [[99, 1.0, 0.2]]}))

    for name, miou in [("teacher_f0.1_s0", 0.4), ("teacher_densecl_lr0.001_wd0.05_f0.1_s0", 0.5),
                       ("teacher_lr0.001_f0.1_s1", 0.45), ("scratch_lr0.001_f0.1_s0", 0.3)]:
        finished(name, miou)
    args = ts.parse_args(["--work", str(tmp_path), "--fractions", "0.1", "--seeds", "2"])
    runs = ts.teacher_recipe_runs(tmp_path, args)
    assert [(r["row"], r["recipe"], r["seed"]) for r in runs] == [
        (ts.ROWS[1], "lr0.001", 1), (ts.ROWS[5], "lr0.001_wd0.05", 0)]  # not the table's own, not a student
    assert "curve" not in runs[0]
    other = ts.parse_args(["--work", str(tmp_path), "--fractions", "0.1", "--teacher-recipe", "lr0.001"])
    assert [r["name"] for r in ts.teacher_recipe_runs(tmp_path, other)] == [
        "teacher_f0.1_s0", "teacher_densecl_lr0.001_wd0.05_f0.1_s0"]
    text = markdown({"setup": _SETUP, "summary": {}, "cpu_hours": 0.1, "teacher_recipes": runs}, "p.png")
    assert f"| {ts.ROWS[5]} | `lr0.001_wd0.05` | 10 % | 0 | 0.5000 | 0.4900 | 700 | 5 |" in text


def test_the_teacher_student_gap_is_measured_to_the_teacher_distilled_from():
    from benchmarks.teacher_student_report import ROWS, fraction_summary

    rows = {ROWS[0]: {"0": _run(0.50), "1": _run(0.52)}, ROWS[1]: {"0": _run(0.45)},
            ROWS[3]: {"0": _run(0.58)}, ROWS[5]: {"0": _run(0.61)}}
    simclr, densecl = fraction_summary(rows), fraction_summary(rows, "teacher_densecl")
    assert simclr["teacher_row"] == ROWS[1] and simclr["gap_recovered"] is None  # 0.45 does not lead
    assert densecl["teacher_row"] == ROWS[5] and abs(densecl["gap"] - 0.10) < 1e-9
    assert abs(densecl["gap_recovered"] - 0.7) < 1e-9 and densecl["aim_half_gap"]


def test_a_teacher_lead_within_the_scratch_seeds_noise_is_no_gap_to_recover():
    from benchmarks.teacher_student_report import ROWS, fraction_summary, markdown

    # scratch 0.16 / 0.15 / 0.22 (std 0.038): a one-seed teacher at 0.18 leads the mean by 0.003
    rows = {ROWS[0]: {"0": _run(0.16), "1": _run(0.15), "2": _run(0.22)}, ROWS[1]: {"0": _run(0.18)},
            ROWS[3]: {"0": _run(0.17), "1": _run(0.17), "2": _run(0.21)}}
    block = fraction_summary(rows)
    assert 0 < block["gap"] < block["lead_noise"] and not block["teacher_leads"]
    assert block["gap_recovered"] is None and not block["aim_half_gap"]
    text = markdown({"setup": _SETUP, "summary": {"0.01": block}, "cpu_hours": 0.1}, "p.png")
    assert "the teacher's lead is within 2 std of the scratch row's seeds" in text
    assert f"| {ROWS[1]} | 0.1800 | 1 |" in text  # one seed: a mean, no spread


def test_teacher_student_trains_the_teacher_it_distils_from_first(tiny_ai4mars, tmp_path, monkeypatch):
    from benchmarks import teacher_student as ts

    order = []

    def fake_run(work: Path, name: str, config: dict) -> dict:  # records the order, leaves a best.pt
        order.append(name)
        (work / "runs" / name).mkdir(parents=True, exist_ok=True)
        (work / "runs" / name / "best.pt").write_bytes(b"")
        return {"name": name}

    monkeypatch.setattr(ts, "run_mode", fake_run)
    args = ts.parse_args(["--work", str(tmp_path), "--temperatures", "1", "--distil-from", "teacher_densecl"])
    ts.run_task(tmp_path, tiny_ai4mars, 0.5, 0, args, lambda row, run: None)
    assert order == ["scratch_f0.5_s0", "densecl_s0", "teacher_densecl_f0.5_s0",
                     "distilled_T1_f0.5_s0_from_teacher_densecl", "sanity_f0.5_s0_from_teacher_densecl",
                     "simclr_s0", "teacher_f0.5_s0", "teacher_random_f0.5_s0"]
    order.clear()
    shared = ts.parse_args(["--work", str(tmp_path / "b"), "--temperatures", "1", "--teacher-seed", "0"])
    (tmp_path / "b" / "runs" / "teacher_f0.5_s0").mkdir(parents=True)
    (tmp_path / "b" / "runs" / "teacher_f0.5_s0" / "best.pt").write_bytes(b"")
    ts.run_task(tmp_path / "b", tiny_ai4mars, 0.5, 1, shared, lambda row, run: None)
    assert order == ["scratch_f0.5_s1", "distilled_T1_f0.5_s1_teacher_s0", "sanity_f0.5_s1_teacher_s0"]


def test_the_val_curve_follows_the_weights_each_evaluation_chose(tmp_path):
    from benchmarks import teacher_student as ts

    records = [{"kind": "train", "step": 10, "time_s": 1.0}, {"kind": "train", "step": 100, "time_s": 10.0},
               {"kind": "eval", "step": 100, "miou": 0.30, "ema/miou": 0.25, "weights": "raw"},
               {"kind": "train", "step": 200, "time_s": 20.0},
               {"kind": "eval", "step": 200, "miou": 0.20, "ema/miou": 0.35, "weights": "ema"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert ts.val_curve(tmp_path, wall=20.0, cpu=40.0) == [[100, 20.0, 0.30], [200, 40.0, 0.35]]
    for r in records:  # a run without the average: its own scores
        r.pop("ema/miou", None), r.pop("weights", None)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [point[2] for point in ts.val_curve(tmp_path, wall=20.0, cpu=40.0)] == [0.30, 0.20]
