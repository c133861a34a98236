"""The teacher -> student benchmark's tables and figure (`python -m benchmarks.teacher_student`
writes them after every finished run, from the runs finished so far).

    OUT.json  setup, every run's figures, per label fraction and row: test mIoU per seed, mean ± std
    OUT.md    the tables, the gap recovered by distillation, the sanity check and the aims, measured
    OUT.png   val mIoU against optimiser steps and against CPU seconds, one line per row (mean over
              the seeds still training at that point), shaded ± one standard deviation over seeds
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from benchmarks.common import DEMO_TEACHER, cpu_described, load_1min
from marsedge.bench.environment import library_versions
from marsedge.io import atomic_write, atomic_write_json, atomic_write_text

ROWS = ("student from scratch", "teacher, SimCLR-pretrained", "teacher, random init", "student distilled",
        "distillation sanity (KD only)", "teacher, DenseCL-pretrained")
SCRATCH, TEACHER, TEACHER_RANDOM, DISTILLED, SANITY, TEACHER_DENSECL = ROWS


def row_summary(runs: dict[str, dict]) -> dict:
    seeds = sorted(runs, key=int)
    mious = [runs[s]["miou"] for s in seeds]
    return {"seeds": [int(s) for s in seeds], "miou_per_seed": mious, "miou_mean": float(np.mean(mious)),
            "miou_std": float(np.std(mious, ddof=1)) if len(mious) > 1 else 0.0,
            "val_miou_per_seed": [runs[s]["val_miou"] for s in seeds],
            "steps_per_seed": [runs[s]["steps"] for s in seeds],
            "plateaued": [runs[s]["stopped_early"] for s in seeds],
            "runs": [runs[s].get("name") for s in seeds],
            "cpu_s": sum(runs[s]["cpu_s"] for s in seeds)}


# --distil-from's names of the teacher rows
TEACHER_ROWS = {"teacher": TEACHER, "teacher_random": TEACHER_RANDOM, "teacher_densecl": TEACHER_DENSECL}


def fraction_summary(rows: dict[str, dict], distil_from: str = "teacher") -> dict:
    """The rows' summaries and the verdicts; the gap is measured to the teacher the students learn
    from (`distil_from`, a --distil-from name)."""
    summary: dict = {"rows": {name: row_summary(rows[name]) for name in ROWS if rows.get(name)}}
    r = summary["rows"]

    def mean(name: str) -> float | None:
        return r[name]["miou_mean"] if name in r else None

    source = TEACHER_ROWS[distil_from]
    scratch, teacher, student = mean(SCRATCH), mean(source), mean(DISTILLED)
    if None not in (scratch, teacher, student):
        gap = teacher - scratch
        spread = max(r[SCRATCH]["miou_std"], r[DISTILLED]["miou_std"])
        # a teacher leads only by more than the scratch row's seeds vary (2 std): a smaller "gap" is
        # noise, and a fraction of it recovered says nothing
        noise = 2 * r[SCRATCH]["miou_std"]
        leads = bool(gap > noise)
        summary.update(teacher_row=source, gap=gap, lead_noise=noise, teacher_leads=leads,
                       gap_recovered=(student - scratch) / gap if leads else None,
                       aim_half_gap=bool(leads and student >= scratch + 0.5 * gap),
                       aim_beats_scratch_by_2_std=bool(student - scratch > 2 * spread))
    if None not in (mean(TEACHER), mean(TEACHER_RANDOM)):
        summary["pretraining_gain"] = mean(TEACHER) - mean(TEACHER_RANDOM)
    if None not in (mean(TEACHER_DENSECL), mean(TEACHER_RANDOM)):
        summary["densecl_gain"] = mean(TEACHER_DENSECL) - mean(TEACHER_RANDOM)
    if None not in (scratch, mean(SANITY)):
        summary["sanity_minus_scratch"] = mean(SANITY) - scratch
        # KD alone can only match the labels where the teacher knows its training frames at least
        # as well as the scratch student: the check applies when the teacher leads it on val
        if teacher is not None:
            summary["sanity_applies"] = bool(np.mean(r[source]["val_miou_per_seed"])
                                             > np.mean(r[SCRATCH]["val_miou_per_seed"]))
    return summary


def setup_block(command: str, args, work: Path, root: Path, student: dict, teacher: dict,
                preprocess: dict) -> dict:
    from marsedge.models.build import ModelConfig, build_model
    from marsedge.models.summary import count_macs

    cached = work / "setup_cache.json"  # MACs and the intensity baseline: computed once per work folder
    if cached.is_file():
        fixed = json.loads(cached.read_text())
    else:
        from benchmarks.label_fraction_curve import intensity_baseline
        from marsedge.train.config import TrainConfig, load_train_config

        size = (preprocess["height"], preprocess["width"])
        base = load_train_config(TrainConfig, DEMO_TEACHER, [f"data.root={root}"])
        fixed = {"student_gmacs": count_macs(build_model(ModelConfig(**student)), size)["total"] / 1e9,
                 "teacher_gmacs": count_macs(build_model(ModelConfig(**teacher)), size)["total"] / 1e9,
                 "intensity_baseline": intensity_baseline(base, "gold-min3")}
        atomic_write_json(cached, fixed)
    return {"command": command, "report_only": bool(getattr(args, "report_only", False)), "work": str(work),
            "cpu": cpu_described(), "threads": os.cpu_count(), "versions": library_versions(),
            "load_average_at_write": load_1min(1), "seeds": args.seeds,
            "fractions": args.fractions, "max_steps": args.max_steps, "eval_steps": args.eval_steps,
            "patience": args.patience, "temperatures": args.temperatures,
            "pretrain_epochs": args.pretrain_epochs, "labelled": args.labelled, "unlabelled": args.unlabelled,
            "size": args.size, "teacher_seed": getattr(args, "teacher_seed", None),
            "teacher_recipe": getattr(args, "teacher_recipe", "default"),
            "distil_from": getattr(args, "distil_from", "teacher"), "ema": getattr(args, "ema", None),
            "student": student, "teacher": teacher, **fixed}


def curve_band(curves: list[list[list[float]]], column: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, std) of val mIoU over seeds at the union of their x values (column 0: steps, 1: CPU
    seconds); at each x only the seeds whose run reached it count."""
    xs = np.unique(np.concatenate([np.asarray(c)[:, column] for c in curves if c]))
    means, stds = [], []
    for x in xs:
        values = [np.interp(x, np.asarray(c)[:, column], np.asarray(c)[:, 2]) for c in curves
                  if c and np.asarray(c)[0, column] <= x <= np.asarray(c)[-1, column]]
        means.append(np.mean(values) if values else np.nan)
        stds.append(np.std(values) if len(values) > 1 else 0.0)
    return xs, np.asarray(means), np.asarray(stds)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = list(results)
    fig, axes = plt.subplots(len(fractions), 2, figsize=(11, 3.8 * len(fractions)), dpi=110, squeeze=False)
    for (ax_steps, ax_cpu), fraction in zip(axes, fractions, strict=True):
        for i, name in enumerate(ROWS):
            runs = results[fraction].get(name, {})
            curves = [run["curve"] for run in runs.values() if run.get("curve")]
            if not curves:
                continue
            for ax, column in ((ax_steps, 0), (ax_cpu, 1)):
                x, mean, std = curve_band(curves, column)
                ax.plot(x, mean, color=f"C{i}", label=f"{name} ({len(curves)} seed{'s' * (len(curves) > 1)})")
                ax.fill_between(x, mean - std, mean + std, color=f"C{i}", alpha=0.2)
        for ax, xlabel in ((ax_steps, "optimiser steps"), (ax_cpu, "CPU seconds (the run's own)")):
            ax.set_xlabel(xlabel)
            ax.set_ylabel("val mIoU")
            ax.set_title(f"{100 * float(fraction):g} % labels")
            ax.grid(alpha=0.3)
        ax_steps.legend(fontsize=7)
    fig.suptitle("Big teacher -> small student, synthetic MSL, CPU: val mIoU to the plateau "
                 "(mean ± std over seeds)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def markdown(result: dict, png: str) -> str:
    s = result["setup"]
    base = s["intensity_baseline"]
    fractions = " and ".join(f"{100 * float(f):g} %" for f in result["summary"])
    lines = [f"# Big teacher -> small student at {fractions} labels (synthetic MSL, CPU), to the plateau",
             "", (f"Written by `{s['command']}` from the runs finished in its work folder (each run's "
                  "config is `configs/<run>.yaml` there; rows may have been trained side by side, "
                  "`--only-seed S --rows R`)" if s.get("report_only") else f"`{s['command']}`") +
             f" on {s['cpu']} ({s['threads']} threads, shared with other jobs: load "
             f"average {s['load_average_at_write']} when written; "
             + ", ".join(f"{k} {v}" for k, v in s.get("versions", {}).items() if k in ("torch", "numpy"))
             + f"). Every row stops after {s['patience']} val "
             f"evaluations ({s['eval_steps']} steps apart) without a new best, at most {s['max_steps']} "
             f"steps; test = gold-min3, scored once per run on the best val checkpoint. KD temperature "
             f"chosen on val among {s['temperatures']} at seed 0. {result['cpu_hours']:.1f} CPU hours of "
             "training so far, pretraining and the runs of the temperatures not chosen included (each "
             "run's CPU and wall seconds are in the json).", "",
             f"Student {s['student']['backbone']} + {s['student']['head']}: {s['student_gmacs']:.3f} GMACs; "
             f"teacher {s['teacher']['backbone']} + {s['teacher']['head']}: {s['teacher_gmacs']:.3f} GMACs "
             f"({s['teacher_gmacs'] / s['student_gmacs']:.1f}x) at 128 px. Intensity-only baseline (grey "
             f"level -> commonest class): mIoU {base['miou']:.3f}." + (
                 "" if s.get("teacher_seed") is None else
                 f" Every seed's student is distilled from seed {s['teacher_seed']}'s teacher: the "
                 "student's seed (its labelled frames and init) varies, the teacher does not.") + (
                 "" if s.get("teacher_recipe", "default") == "default" else
                 f" The teachers train with their own recipe `{s['teacher_recipe']}` (learning rate, "
                 "weight decay, scale augmentation: benchmarks/teacher_student_rows.py TEACHER_RECIPES).") + (
                 "" if s.get("distil_from", "teacher") == "teacher" else
                 f" The students are distilled from the `{s['distil_from']}` row's teacher.") + (
                 "" if s.get("ema") is None else
                 f" Every row keeps an EMA of its weights (decay {s['ema']:g}, `run.ema`), evaluated beside "
                 "them; best.pt and the stopping rule take the better of the two on val."), ""]
    for fraction, block in result["summary"].items():
        lines += [f"## {100 * float(fraction):g} % labels", "",
                  "| row | test mIoU (mean ± std) | seeds | per seed | best val mIoU | steps (plateau?) |",
                  "|---|---|---|---|---|---|"]
        for name, r in block["rows"].items():
            ends = zip(r["steps_per_seed"], r["plateaued"], strict=True)
            steps = ", ".join(f"{n}{'' if plateau else ' (cap)'}" for n, plateau in ends)
            spread = f" ± {r['miou_std']:.4f}" if len(r["seeds"]) > 1 else ""  # one seed: no spread
            lines.append(f"| {name} | {r['miou_mean']:.4f}{spread} | {len(r['seeds'])} | "
                         f"{', '.join(f'{m:.4f}' for m in r['miou_per_seed'])} | "
                         f"{', '.join(f'{v:.4f}' for v in r['val_miou_per_seed'])} | {steps} |")
        lines.append("")
        capped = [name for name, r in block["rows"].items() if not all(r["plateaued"])]
        if capped:
            lines += [f"Not converged ({'; '.join(capped)}): reached the {s['max_steps']}-step cap in at "
                      "least one seed, val still improving; such a row's figure is its score at the cap, not "
                      "at its plateau, and a comparison with it measures the cap as much as the method.", ""]
        if "gap" in block:
            if block["gap"] <= 0:
                recovered = "n/a (the teacher does not lead)"
            elif not block["teacher_leads"]:
                recovered = (f"n/a (the teacher's lead is within 2 std of the scratch row's seeds, "
                             f"{block['lead_noise']:.4f}: no lead to recover)")
            else:
                recovered = f"{block['gap_recovered']:.2f}"
            lines.append(f"The teacher distilled from ({block.get('teacher_row', TEACHER)}) - scratch: "
                         f"{block['gap']:+.4f} mIoU; gap recovered by distillation: "
                         f"{recovered}; distilled >= scratch + half the gap: {block['aim_half_gap']}; "
                         f"distilled - scratch > 2 std: {block['aim_beats_scratch_by_2_std']}.")
        if "pretraining_gain" in block:
            lines.append(f"SimCLR pretraining vs random init (teacher): {block['pretraining_gain']:+.4f}.")
        if "densecl_gain" in block:
            lines.append(f"DenseCL pretraining vs random init (teacher): {block['densecl_gain']:+.4f}.")
        if "sanity_minus_scratch" in block:
            verdict = "passes" if block["sanity_minus_scratch"] >= 0 else "FAILS"
            if not block.get("sanity_applies", False):
                verdict += " (not conclusive: the teacher does not lead the scratch student on val)"
            lines.append(f"Sanity (KD alone on scratch's frames and schedule) - scratch: "
                         f"{block['sanity_minus_scratch']:+.4f}: {verdict}.")
        lines.append("")
    if result.get("pretraining_probe"):
        probes = "; ".join(f"{run}: {p['first']['value']:.3f} (epoch {p['first']['epoch']}) -> "
                           f"{p['last']['value']:.3f} (epoch {p['last']['epoch']})"
                           for run, p in result["pretraining_probe"].items())
        lines += [f"The pretrained features on val (a nearest-centroid probe of the frozen backbone, "
                  f"{result['pretraining_probe_note']}), mIoU: {probes}.", ""]
    if result.get("teacher_recipes"):
        lines += ["## The teacher's own recipe", "",
                  f"Finished teacher runs of the other recipes in the work folder (`--teacher-recipe R`, "
                  f"benchmarks/teacher_student_rows.py TEACHER_RECIPES; the table above: "
                  f"`{s.get('teacher_recipe', 'default')}`), one seed each, same stopping rule:", "",
                  "| row | recipe | labels | seed | test mIoU | best val mIoU | steps (plateau?) | CPU s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in result["teacher_recipes"]:
            plateau = "" if r["stopped_early"] else " (cap)"
            lines.append(f"| {r['row']} | `{r['recipe']}` | {100 * r['fraction']:g} % | {r['seed']} | "
                         f"{r['miou']:.4f} | {r['val_miou']:.4f} | {r['steps']}{plateau} | "
                         f"{r['cpu_s']:.0f} |")
        lines.append("")
    lines += [f"![val mIoU against steps and CPU seconds]({png})", ""]
    return "\n".join(lines)


def write_results(stem: Path, results: dict, command: str, args, work: Path, root: Path, student: dict,
                  teacher: dict, preprocess: dict, teacher_recipes: list[dict] | None = None) -> None:
    """OUT.json, .md and .png from the runs finished so far (`results[fraction][row][seed] = run`);
    `teacher_recipes`: the finished teacher runs of the other teacher recipes."""
    # every finished run of the work folder, SimCLR pretraining and the temperatures not chosen included
    # (distill_ablation's runs, which share the folder, are its own report's)
    cpu = sum(json.loads(p.read_text())["cpu_s"] for p in (work / "runs").glob("*/bench.json")
              if not p.parent.name.startswith("ablation_"))
    result = {"setup": setup_block(command, args, work, root, student, teacher, preprocess),
              "summary": {f: fraction_summary(rows, getattr(args, "distil_from", "teacher"))
                          for f, rows in results.items() if rows},
              "runs": results, "cpu_hours": cpu / 3600, "teacher_recipes": teacher_recipes or []}
    # whether the pretraining improved the features: its probe's first and last value, per run
    probes = {p.parent.name: json.loads(p.read_text()).get("probe")
              for p in sorted((work / "runs").glob("*/bench.json"))
              if re.fullmatch(r"(simclr|densecl)_s\d+", p.parent.name)}
    result["pretraining_probe"] = {run: probe for run, probe in probes.items() if probe}
    result["pretraining_probe_note"] = "64 labelled train frames, every 4 epochs"
    atomic_write_json(stem.with_suffix(".json"), result)
    plot({f: rows for f, rows in results.items() if rows}, stem.with_suffix(".png"))
    atomic_write_text(stem.with_suffix(".md"), markdown(result, stem.with_suffix(".png").name))
