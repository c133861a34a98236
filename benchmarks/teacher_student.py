#!/usr/bin/env python
"""Does the big-teacher -> small-student chain pay off when labels are scarce? Each row to its plateau.

    python -m benchmarks.teacher_student            # 3 seeds x 10 % and 1 % labels (many CPU hours)
    python -m benchmarks.teacher_student --quick    # 1 seed, 10 %, 40 steps a row: a smoke run of every row

Chen et al. 2020 ("Big Self-Supervised Models are Strong Semi-Supervised Learners") pretrain a big
network on unlabelled images, finetune it on 1 % or 10 % of the labels and distil it into a smaller
network. Here, on one synthetic MSL tree (`marsedge data synth`), for each label fraction and seed:

  scratch     student (MobileNetV2 + separable DeepLabv3+) trained on the labelled fraction alone;
  teacher     a full-width ResNet-18 + DeepLabv3+ (23x the student's MACs), SimCLR-pretrained (64 px
              views) on every frame the run
              may see without labels (train minus val, and the tree's unlabelled split), then finetuned
              on the labelled fraction;
  teacher_random  the same teacher from random init (what the pretraining adds);
  teacher_densecl the same teacher pretrained with DenseCL's dense term beside SimCLR's
              (`pretrain.objective: densecl`, output stride 16) instead of SimCLR alone;
  distilled   the student distilled from `teacher` by the default recipe (docs/distillation.md):
              each step 8 labelled + 8 unlabelled frames, cross-entropy on the labels + pixel KD on every
              frame against the frozen teacher run live on the same augmented view;
  sanity      the student distilled on exactly scratch's labelled frames and schedule with the KD term
              alone (T = 1): it must reach at least `scratch`, else the distillation code is wrong.

Every row trains until its val mIoU stops improving: evaluated every `--eval-steps` optimiser steps,
stopped after `--patience` evaluations without a new best, at most `--max-steps`. An epoch is one
pass over the labelled frames for every row (distillation's unlabelled frames ride along), so the
rows share the schedule. best.pt is chosen on val (10 % of the train labels by clock group, the same
for every seed and fraction) and the gold-min3 test split is scored once per run, at the end. The
distillation temperature is chosen on val: at seed 0 the distilled row runs at each of
`--temperatures`, the one with the best val mIoU is that seed's row and the other seeds' setting.

Each finished run leaves runs/<name>/bench.json under --work (test and val scores, the val learning
curve, wall and CPU seconds) and is read back, never trained again; an interrupted run resumes from
its last.pt. After every run OUT/teacher_student.{json,md,png} are rewritten with whatever has
finished (rows with fewer seeds say so), so a long benchmark is readable while it runs. Runs go in
the order that informs first: 10 % labels, seed 0, scratch, teacher, distilled, sanity; then the
other rows and seeds. The rows' configs (models, data, recipes, schedules) are in
teacher_student_rows.py, the report in teacher_student_report.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, command, finished_run, synthetic_tree, train
from benchmarks.teacher_student_report import ROWS, TEACHER_ROWS, write_results
from benchmarks.teacher_student_rows import (
    PREPROCESS,
    STUDENT,
    TEACHER,
    TEACHER_RECIPES,
    TEST,
    distilled,
    pretrain_config,
    supervised,
    unlabelled_pool,
)

ROW_KEYS = {"scratch": ROWS[0], **TEACHER_ROWS, "distilled": ROWS[3], "sanity": ROWS[4]}  # --rows names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=None, help="data and runs (default runs/bench_teacher_student[_quick])")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--quick", action="store_true", help="1 seed, 10 %%, 40 steps a row, small data")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--fractions", default="0.1,0.01", help="label fractions of the train split, in run order")
    p.add_argument("--max-steps", type=int, default=8000, help="cap of every row (optimiser steps)")
    p.add_argument("--eval-steps", type=int, default=100, help="optimiser steps between val evaluations")
    p.add_argument("--patience", type=int, default=10, help="val evaluations without a new best to stop")
    p.add_argument("--temperatures", default="1,4", help="KD temperatures tried at seed 0 (chosen on val)")
    p.add_argument("--pretrain-epochs", type=int, default=20)
    p.add_argument("--labelled", type=int, default=1000, help="labelled synthetic frames (train + test)")
    p.add_argument("--unlabelled", type=int, default=400, help="unlabelled synthetic frames")
    p.add_argument("--size", type=int, default=128, help="synthetic frame size (px)")
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--rows", default=",".join(ROW_KEYS), help="the rows to train (finished runs of the "
                   "others are read back): independent rows can run side by side as separate processes")
    p.add_argument("--teacher-seed", type=int, default=None,
                   help="distil every seed's student from this seed's teacher (a teacher costs hours; "
                   "the student's seed then varies, the teacher does not)")
    p.add_argument("--teacher-recipe", default="default", choices=tuple(TEACHER_RECIPES),
                   help="what the teacher rows change in the student's recipe (learning rate, weight decay, "
                   "scale augmentation); other than the default, their runs are named _<RECIPE> and the "
                   "students distilled from them _teacher_<RECIPE>")
    p.add_argument("--distil-from", default="teacher",
                   choices=tuple(TEACHER_ROWS),
                   help="the teacher row the distilled and sanity rows learn from (default: the SimCLR "
                   "teacher); other than the default, their runs are named _from_<ROW>")
    p.add_argument("--ema", type=float, default=None,
                   help="every row also keeps an EMA of its weights with this decay (run.ema, e.g. 0.999), "
                        "evaluated beside them: best.pt and the stopping rule take the better; run names "
                        "end in _ema<decay>, so these are other runs")
    p.add_argument("--only-seed", type=int, default=None,
                   help="train this seed only (side by side, as --rows)")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from the finished runs; train nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.fractions, args.max_steps, args.eval_steps, args.patience = 1, "0.1", 40, 20, 2
        args.temperatures, args.pretrain_epochs, args.labelled, args.unlabelled = "1", 1, 300, 60
    args.work = Path(args.work or f"runs/bench_teacher_student{'_quick' if args.quick else ''}").resolve()
    args.fractions = [float(f) for f in args.fractions.split(",")]
    args.temperatures = [float(t) for t in args.temperatures.split(",")]
    args.rows = args.rows.split(",")
    if args.ema is not None and not 0.0 < args.ema < 1.0:
        p.error(f"--ema: a decay in (0, 1) such as 0.999, got {args.ema}")
    unknown = sorted(set(args.rows) - set(ROW_KEYS))
    if unknown:
        p.error(f"--rows: unknown row(s) {', '.join(unknown)}; valid: {', '.join(ROW_KEYS)}")
    return args


# ---- one run through train.py's own modes ---------------------------------------------------


def val_curve(run_dir: Path, wall: float, cpu: float) -> list[list[float]]:
    """[step, CPU seconds, val mIoU] of every val evaluation in runs/<name>/metrics.jsonl. The log
    times its train records in wall seconds since the (last) start; the clock is made cumulative over
    resumes, read at each evaluation's step by interpolation between the train records (the run's
    start and end, `wall` seconds into its last start, close it), and scaled to CPU seconds by the
    run's own CPU/wall ratio. Under run.ema the score is that of the weights the evaluation chose (its
    `weights`: "raw" or "ema"), the value best.pt and the stopping rule follow."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    steps, clock, offset, last = [0], [0.0], 0.0, 0.0
    for r in records:
        if r["kind"] == "train":
            if r["time_s"] < last:  # a resumed run's clock starts again at 0
                offset += last
            last = r["time_s"]
            steps.append(r["step"])
            clock.append(offset + last)
    evals = [r for r in records if r["kind"] == "eval"]
    steps.append(max([steps[-1]] + [r["step"] for r in evals]))
    clock.append(max(clock[-1], offset + wall))
    per_wall = cpu / wall if wall > 0 else 1.0
    return [[r["step"], round(float(np.interp(r["step"], steps, clock)) * per_wall, 1),
             round(r["ema/miou" if r.get("weights") == "ema" else "miou"], 4)] for r in evals]


def run_mode(work: Path, name: str, config: dict) -> dict:
    """Train one config (written to work/configs/NAME.yaml) through its mode and return its figures;
    a finished run (its bench.json exists) is read back, an interrupted one resumes from last.pt."""

    def figures() -> dict:
        run = {"log_every": 10, "confusion_png": False, **config.pop("run", {})}
        summary = train(work, name, {"num_workers": 1, **config, "run": run}, resume=True)
        wall, cpu = summary["seconds"], summary["cpu_seconds"]
        result = {"name": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                  "resumed": summary["resumed"], "steps": summary["step"],
                  "stopped_early": summary["stopped_early"], "best_epoch": summary["best"]["epoch"],
                  "val_miou": summary["best"]["value"]}
        if "probe" in summary:  # pretraining: the val feature probe's first, last and best mIoU
            result["probe"] = summary["probe"]
        if config["mode"] != "pretrain":
            metrics = summary["test_metrics"]
            result.update(miou=metrics[f"{TEST}/miou"], iou=metrics[f"{TEST}/iou"],
                          curve=val_curve(work / "runs" / name, wall, cpu))
        print(f"  {name}: {result.get('miou', float('nan')):.4f} test mIoU, {result['steps']} steps, "
              f"{result['cpu_s']:.0f} CPU s", flush=True)
        return result

    return finished_run(work, name, figures)


def pretrain(work: Path, root: Path, seed: int, epochs: int, name: str | None = None,
             objective: str = "simclr") -> Path:
    """Run (or read back) the teacher's pretraining (`pretrain_config`); its best.pt."""
    name = name or f"{objective}_s{seed}"
    run_mode(work, name, pretrain_config(work, root, seed, epochs, objective))
    return work / "runs" / name / "best.pt"


# ---- the plan ---------------------------------------------------------------------------------


def chosen_temperature(work: Path, fraction: float, temperatures: list[float],
                       suffix: str = "") -> float | None:
    """The KD temperature with the best val mIoU at seed 0 (None until every candidate has finished)."""
    scores = {}
    for t in temperatures:
        done = work / "runs" / f"distilled_T{t:g}_f{fraction:g}_s0{suffix}" / "bench.json"
        if not done.is_file():
            return None
        scores[t] = json.loads(done.read_text())["val_miou"]
    return max(scores, key=scores.get)


def ema_suffix(args: argparse.Namespace) -> str:
    """What every run name but pretraining's adds under --ema: `_ema<decay>` after the seed."""
    return "" if args.ema is None else f"_ema{args.ema:g}"


def recipe_suffix(recipe: str) -> str:
    """What a run name adds for a teacher recipe other than the default: `_<recipe>`."""
    return "" if recipe == "default" else f"_{recipe}"


def student_suffix(args: argparse.Namespace) -> str:
    """What a distilled run's name adds for a teacher other than the default: `_teacher_<recipe>`
    for --teacher-recipe, `_from_<row>` for --distil-from."""
    recipe = recipe_suffix(args.teacher_recipe)
    return (f"_teacher{recipe}" if recipe else "") + ("" if args.distil_from == "teacher" else
                                                        f"_from_{args.distil_from}")


def teacher_run(row: str, fraction: float, seed: int, recipe: str, ema: str = "") -> str:
    """The run name of a teacher row (`teacher`, `teacher_random`, `teacher_densecl`) trained with
    `recipe` (a TEACHER_RECIPES key) and `ema` (ema_suffix), so teachers of another recipe are other
    runs."""
    return f"{row}{recipe_suffix(recipe)}_f{fraction:g}_s{seed}{ema}"


def teacher_checkpoint(work: Path, fraction: float, seed: int, args: argparse.Namespace) -> Path:
    """best.pt of the teacher row the students learn from (--distil-from, --teacher-recipe)."""
    return work / "runs" / teacher_run(args.distil_from, fraction, seed, args.teacher_recipe,
                                       ema_suffix(args)) / "best.pt"


def read_or_train(work: Path, name: str, train: bool, config) -> dict | None:
    """A run's figures: read back when finished, else trained when `train` (`config()` builds its
    config), else None."""
    done = work / "runs" / name / "bench.json"
    if done.is_file():
        return json.loads(done.read_text())
    return run_mode(work, name, config()) if train else None


def teacher_recipe_runs(work: Path, args: argparse.Namespace) -> list[dict]:
    """The finished teacher runs of every recipe but --teacher-recipe's (the report's table of what
    the teacher's own recipe buys), without their curves."""
    found = []
    for fraction in args.fractions:
        for recipe in [r for r in TEACHER_RECIPES if r != args.teacher_recipe]:
            for key in TEACHER_ROWS:
                for seed in range(args.seeds):
                    name = teacher_run(key, fraction, seed, recipe, ema_suffix(args))
                    done = work / "runs" / name / "bench.json"
                    if done.is_file():
                        run = {k: v for k, v in json.loads(done.read_text()).items() if k != "curve"}
                        found.append({"fraction": fraction, "row": ROW_KEYS[key], "recipe": recipe,
                                      "seed": seed, **run})
    return found


def run_task(work: Path, root: Path, fraction: float, seed: int, args, record) -> None:
    """Every row of `args.rows` at one label fraction and seed, most informative first; a finished
    run of any row is read back; `record(row, run)` after each."""
    ema = ema_suffix(args)
    tag = f"f{fraction:g}_s{seed}{ema}"
    runs = work / "runs"

    def row(key: str, run_name: str, config) -> None:  # config: builds the run's config when needed
        run = read_or_train(work, run_name, key in args.rows and not args.report_only, config)
        if run is not None:
            record(ROW_KEYS[key], run)

    shared = args.teacher_seed is not None and args.teacher_seed != seed
    taught = f"_teacher_s{args.teacher_seed}" if shared else ""  # a run's name says whose teacher
    recipe = args.teacher_recipe
    own = student_suffix(args)  # seed 0's temperature runs
    taught += own

    def teacher() -> Path:
        path = teacher_checkpoint(work, fraction, args.teacher_seed if shared else seed, args)
        if not path.is_file():
            raise SystemExit(f"{path}: the distillation rows need the {args.distil_from} row's run; "
                             "train it first")
        return path

    # the teacher rows (one per seed unless --teacher-seed shares seed S's); the one the students learn
    # from (--distil-from) trains before them, the others after
    teachers = {
        "teacher": lambda: supervised(root, TEACHER, fraction, seed, args,
                                      pretrain(work, root, seed, args.pretrain_epochs), recipe),
        "teacher_random": lambda: supervised(root, TEACHER, fraction, seed, args, None, recipe),
        "teacher_densecl": lambda: supervised(
            root, TEACHER, fraction, seed, args,
            pretrain(work, root, seed, args.pretrain_epochs, objective="densecl"), recipe),
    }

    def teacher_row(key: str) -> None:
        if not shared:
            row(key, teacher_run(key, fraction, seed, recipe, ema), teachers[key])

    row("scratch", f"scratch_{tag}", lambda: supervised(root, STUDENT, fraction, seed, args, None))
    teacher_row(args.distil_from)
    pool = lambda: unlabelled_pool(root, fraction, seed, work / f"pool_f{fraction:g}_s{seed}")  # noqa: E731
    first = args.temperatures[0] if seed == 0 else chosen_temperature(work, fraction, args.temperatures,
                                                                      ema + own)
    first = args.temperatures[0] if first is None else first
    row("distilled", f"distilled_T{first:g}_{tag}{taught}",
        lambda: distilled(root, teacher(), pool(), fraction, seed, args, first))
    row("sanity", f"sanity_{tag}{taught}",
        lambda: distilled(root, teacher(), None, fraction, seed, args, 1.0))
    for key in teachers:
        if key != args.distil_from:
            teacher_row(key)
    if seed == 0 and len(args.temperatures) > 1:
        for t in args.temperatures[1:]:
            row("distilled", f"distilled_T{t:g}_{tag}{own}",
                lambda t=t: distilled(root, teacher(), pool(), fraction, seed, args, t))
        best = chosen_temperature(work, fraction, args.temperatures, ema + own)
        if best is not None:
            record(ROWS[3], json.loads((runs / f"distilled_T{best:g}_{tag}{own}" / "bench.json").read_text()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work, out = args.work, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = synthetic_tree(work / "data", args.labelled, args.size, seed=args.data_seed, test_fraction=0.2,
                          unlabelled=args.unlabelled, progress=True)
    line = command("teacher_student", argv if argv is not None else sys.argv[1:])
    results: dict = {f"{f:g}": {} for f in args.fractions}
    stem = "teacher_student_quick" if args.quick else "teacher_student"

    for fraction in args.fractions:
        for seed in range(args.seeds) if args.only_seed is None else [args.only_seed]:
            def record(row: str, run: dict, f: float = fraction, s: int = seed) -> None:
                results[f"{f:g}"].setdefault(row, {})[str(s)] = run
                write_results(out / stem, results, line, args, work, root, STUDENT, TEACHER, PREPROCESS,
                              teacher_recipe_runs(work, args))

            run_task(work, root, fraction, seed, args, record)
    print((out / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
