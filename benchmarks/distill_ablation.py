#!/usr/bin/env python
"""What each ingredient of the distillation recipe buys: the default recipe changed in one thing.

    python -m benchmarks.distill_ablation --work W      # W: a teacher_student work folder (its teacher)
    python -m benchmarks.distill_ablation --quick       # a smoke run of every variant, minutes
    python -m benchmarks.distill_ablation --work W --variants t4,cwd &   # side by side, then
    python -m benchmarks.distill_ablation --work W --report-only         # the report of all finished
    python -m benchmarks.distill_ablation --work W --confirm mask        # a variant at every seed

One seed (0) and one label fraction (the first of `--fractions`), on the data, teacher and schedule
of `python -m benchmarks.teacher_student` with the same flags: every variant distils seed 0's
teacher into the student exactly as the benchmark's `student distilled` row does, except for the
one ingredient it names, and trains to its own val plateau (same cap, cadence and patience):

  pooled          batches of 16 drawn from the labelled and unlabelled frames together, not 8 + 8
                  (the same frames per step; few labelled frames among many then reach the labels rarely)
  no_unlabelled   the labelled frames only: KD on them, no pool of unlabelled frames
  t4              KD temperature 4 (the recipe: 1)
  cwd             + channel-wise distillation of the logits (tau 4, weight 3, as CIRKD)
  mask            KD only on pixels where the teacher's top probability reaches 0.8
  third           a third of the step cap (`--max-steps` / 3): the schedule
  pretrain_short  (a teacher) the teacher finetuned from its pretraining (SimCLR, or DenseCL under
                  --distil-from teacher_densecl) run for a quarter of the epochs

The default row and the teacher are read from the work folder's finished runs (trained there if
absent). Each run's val mIoU is the choice signal and its gold-min3 test mIoU is scored once; the
table gives both and what the ingredient changes on val, one seed: differences under the benchmark's
seed spread (its scratch row's std) are noise. Under `--quick` SimCLR runs one epoch, so
pretrain_short and the teacher pretrain alike. Writes OUT/distill_ablation{_quick}.{json,md}; a
finished variant is read back, never trained again.

A one-seed difference is a lead, not a finding: `--confirm V,...` trains those variants at the
benchmark's other seeds too (1 .. --seeds - 1, each distilling seed 0's teacher, as the benchmark's
`--teacher-seed 0` rows do) and tables them beside the benchmark's scratch and distilled rows of the
same seeds, with the difference to the recipe against 2 x the larger seed std.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks import teacher_student as ts
from benchmarks import teacher_student_rows as row_configs
from benchmarks.common import command, cpu_described, load_1min, synthetic_tree, write_result
from benchmarks.teacher_student_report import DISTILLED, SCRATCH, TEACHER_ROWS, row_summary
from marsedge.bench.environment import library_versions

VARIANTS = {
    "pooled": "labelled and unlabelled frames pooled, batches of 16 (recipe: 8 labelled + 8 unlabelled)",
    "no_unlabelled": "no unlabelled frames (KD on the labelled frames only)",
    "t4": "KD temperature 4 (recipe: 1)",
    "cwd": "+ channel-wise distillation of the logits, tau 4, weight 3",
    "mask": "KD only where the teacher's top probability >= 0.8",
    "third": "a third of the step cap",
    "pretrain_short": "teacher: its pretraining for a quarter of the epochs before finetuning",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's flags, and `--variants A,B` (default: all): the variants this process trains;
    the others' finished runs are read back, so variants can run side by side as processes."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--confirm", default="")
    own, rest = p.parse_known_args(argv)
    args = ts.parse_args(rest)
    args.out, args.variants = Path(args.out), own.variants.split(",")
    args.confirm = [v for v in own.confirm.split(",") if v]
    if args.ema is not None:  # the variants' run names do not carry it: they would read back other runs
        raise SystemExit("--ema: not an ablation option; the ablation reads the runs without it")
    for flag, keys, valid in (("--variants", args.variants, VARIANTS),
                              ("--confirm", args.confirm, [k for k in VARIANTS if k != "pretrain_short"])):
        unknown = sorted(set(keys) - set(valid))
        if unknown:
            raise SystemExit(f"{flag}: unknown variant(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return args


def unlabelled_count(config: dict) -> int:
    """The unlabelled frames a distill config draws: its sources less val's and the test splits'
    frames, as marsedge.distill.data.build_distill_set counts them."""
    from marsedge.config import from_dict
    from marsedge.data.frame_sources import SourceConfig, mix_sources
    from marsedge.train.config import DataConfig
    from marsedge.train.supervised import held_out_files

    sources = [from_dict(SourceConfig, s) for s in config["distill"]["unlabelled"]]
    held_out = held_out_files(from_dict(DataConfig, config["data"]), config["seed"])
    return len(mix_sources(sources, None, config["seed"], at_most=True, held_out=held_out,
                           key="distill.unlabelled"))


def variant_config(key: str, work: Path, root: Path, fraction: float, args: argparse.Namespace,
                   seed: int = 0) -> dict:
    """The config of one variant: the benchmark's distilled row (temperature 1, seed 0's teacher) of
    `seed` changed in the one ingredient `key` names (a teacher config for pretrain_short)."""
    teacher = ts.teacher_checkpoint(work, fraction, 0, args)
    pool = row_configs.unlabelled_pool(root, fraction, seed, work / f"pool_f{fraction:g}_s{seed}")
    if key == "pretrain_short":  # the pretraining of the teacher distilled from, a quarter as long
        objective = "densecl" if args.distil_from == "teacher_densecl" else "simclr"
        init = ts.pretrain(work, root, 0, max(1, args.pretrain_epochs // 4), name=f"{objective}_short_s0",
                           objective=objective)
        return row_configs.supervised(root, row_configs.TEACHER, fraction, 0, args, init, args.teacher_recipe)
    if key == "third":
        short = argparse.Namespace(**{**vars(args), "max_steps": args.max_steps // 3, "patience": 10**6})
        return row_configs.distilled(root, teacher, pool, fraction, seed, short, 1.0)
    config = row_configs.distilled(root, teacher, None if key == "no_unlabelled" else pool, fraction, seed,
                                   args, 1.0)
    section, kd = config["distill"], config["distill"]["terms"]["kd"]
    if key == "no_unlabelled":
        section["gt_weight"] = 1.0  # distilled() without a pool is the sanity row: KD alone
    elif key == "pooled":
        section["sampling"] = "pooled"
        labelled = row_configs.labelled_frames(root, fraction, seed)
        # batches of 16 (the recipe's 8 + 8) over the pooled set, the same step cap and val cadence
        config |= row_configs.schedule(labelled + unlabelled_count(config), args, batch=16)
    elif key == "t4":
        kd["temperature"] = 4.0
    elif key == "cwd":
        section["terms"]["cwd"] = {"weight": 3.0, "tau": 4.0}
    elif key == "mask":
        kd["confidence_threshold"] = 0.8
    else:
        raise ValueError(f"unknown variant {key!r}")
    return config


def table(rows: dict[str, dict], reference: dict, teacher: dict, noise: float | None,
          teacher_row: str) -> list[str]:
    lines = ["| variant | what changes | val mIoU | Δ val vs recipe | test mIoU | steps (plateau?) | CPU s |",
             "|---|---|---|---|---|---|---|"]

    def line(name: str, what: str, run: dict, base: dict) -> str:
        plateau = "" if run["stopped_early"] else " (cap)"
        return (f"| {name} | {what} | {run['val_miou']:.4f} | {run['val_miou'] - base['val_miou']:+.4f} | "
                f"{run['miou']:.4f} | {run['steps']}{plateau} | {run['cpu_s']:.0f} |")

    lines.append(line("recipe", "the benchmark's distilled row", reference, reference))
    for key, run in rows.items():
        base = teacher if key == "pretrain_short" else reference
        lines.append(line(key, VARIANTS[key], run, base))
    lines.append(line("teacher", f"the teacher distilled from ({teacher_row})", teacher, teacher))
    if noise is not None:
        lines += ["", f"Seed noise: the benchmark's scratch student varies by {noise:.4f} test mIoU (std "
                  "over its seeds); a one-seed difference under that is not a finding."]
    return lines


def confirmation(runs: dict[str, dict[str, dict]], keys: list[str]) -> tuple[dict, list[str]]:
    """The confirmed variants (`keys`) beside the scratch and recipe rows over the same seeds
    (`runs`: row -> seed -> run): each row's summary, each variant's difference to the recipe and
    whether it is beyond 2 x the larger of their seed std; and the markdown table of them."""
    names = {SCRATCH: "student alone", DISTILLED: "recipe (the benchmark's distilled row)"}
    summaries = {row: row_summary(runs[row]) for row in [SCRATCH, DISTILLED, *keys] if runs.get(row)}
    lines = ["| row | test mIoU per seed | mean ± std | val mIoU mean | steps per seed |",
             "|---|---|---|---|---|"]
    for row, r in summaries.items():
        per_seed = " / ".join(f"{m:.4f}" for m in r["miou_per_seed"])
        lines.append(f"| {names.get(row, row)} | {per_seed} (seeds {', '.join(map(str, r['seeds']))}) | "
                     f"{r['miou_mean']:.4f} ± {r['miou_std']:.4f} | {np.mean(r['val_miou_per_seed']):.4f} | "
                     f"{' / '.join(map(str, r['steps_per_seed']))} |")
    verdicts = {}
    recipe = summaries.get(DISTILLED)
    for key in keys:
        r = summaries.get(key)
        if r is None or recipe is None or r["seeds"] != recipe["seeds"] or len(r["seeds"]) < 2:
            continue
        difference = r["miou_mean"] - recipe["miou_mean"]
        noise = 2 * max(r["miou_std"], recipe["miou_std"])
        beyond = bool(abs(difference) > noise)
        verdicts[key] = {"minus_recipe": difference, "noise": noise, "beyond_noise": beyond}
        lines += ["", f"{key} minus the recipe: {difference:+.4f} test mIoU over {len(r['seeds'])} seeds, "
                  f"{'beyond' if beyond else 'within'} 2 x the larger seed std ({noise:.4f})."]
    return {"rows": summaries, "verdicts": verdicts}, lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work, fraction = args.work, args.fractions[0]
    root = synthetic_tree(work / "data", args.labelled, args.size, seed=args.data_seed, test_fraction=0.2,
                          unlabelled=args.unlabelled, progress=True)
    line = command("distill_ablation", argv if argv is not None else sys.argv[1:])
    tag = f"f{fraction:g}_s0"
    # the recipe's row and its teacher, as the benchmark trains them (read back when finished)
    found: dict[str, dict] = {}
    base = argparse.Namespace(**{**vars(args), "rows": ["scratch", args.distil_from, "distilled"], "seeds": 1,
                                 "only_seed": None, "teacher_seed": None, "temperatures": [1.0]})
    ts.run_task(work, root, fraction, 0, base, lambda row, run: found.__setitem__(row, run))
    if ts.ROWS[3] not in found or TEACHER_ROWS[args.distil_from] not in found:
        raise SystemExit(f"{work}: no finished distilled row or {args.distil_from} teacher to compare with")
    reference, teacher = found[ts.ROWS[3]], found[TEACHER_ROWS[args.distil_from]]
    scratch = sorted((work / "runs").glob(f"scratch_f{fraction:g}_s*/bench.json"))
    noise = float(np.std([json.loads(p.read_text())["miou"] for p in scratch], ddof=1)) \
        if len(scratch) > 1 else None
    stem = args.out / f"distill_ablation{'_quick' if args.quick else ''}"
    rows: dict[str, dict] = {}
    at_seeds: dict[str, dict[str, dict]] = {SCRATCH: {}, DISTILLED: {"0": reference}}  # --confirm's
    if SCRATCH in found:
        at_seeds[SCRATCH]["0"] = found[SCRATCH]

    def report() -> str:
        missing = [k for k in VARIANTS if k not in rows]
        markdown = "\n".join([
            f"# What each ingredient of the distillation recipe buys ({100 * fraction:g} % labels, seed 0)",
            "", f"`{line}` on {cpu_described()} (load average {load_1min(1)} when written). Each variant is "
            "the benchmark's distilled row (python -m benchmarks.teacher_student, same flags) changed in "
            f"one thing, trained to its val plateau (patience {args.patience} evaluations "
            f"{args.eval_steps} steps apart, cap {args.max_steps} steps); test = gold-min3, scored once "
            "per run." + (f" Not run yet: {', '.join(missing)}." if missing else ""), "",
            *table(rows, reference, teacher, noise, TEACHER_ROWS[args.distil_from]), ""])
        confirmed, lines = confirmation(at_seeds, args.confirm)
        if args.confirm:
            markdown += "\n".join([
                "", f"## At every seed: {', '.join(args.confirm)}", "",
                "The variants above that a seed could flatter, trained at each seed of the benchmark "
                "(each distilling seed 0's teacher), beside the benchmark's rows of the same seeds.", "",
                *lines, ""])
        result = {"command": line, "cpu": cpu_described(), "versions": library_versions(),
                  "fraction": fraction, "recipe": reference, "teacher": teacher, "variants": rows,
                  "what": VARIANTS, "scratch_std": noise, "confirmed": confirmed}
        write_result(stem, result, markdown)
        return markdown

    # a finished variant is read back, the ones this process owns (--variants) are trained, and the
    # report is rewritten after each one found: an interrupted run loses nothing; a random-init
    # teacher has no pretraining to shorten
    for key in [k for k in VARIANTS if not (k == "pretrain_short" and args.distil_from == "teacher_random")]:
        name = f"ablation_{key}_{tag}{ts.student_suffix(args)}"
        run = ts.read_or_train(work, name, key in args.variants and not args.report_only,
                               lambda key=key: variant_config(key, work, root, fraction, args))
        if run is not None:
            rows[key] = run
            at_seeds.setdefault(key, {})["0"] = run
            report()
    # --confirm: the benchmark's rows at the other seeds (seed 0's teacher), then the variants there
    for seed in range(1, args.seeds) if args.confirm else []:
        def record(row: str, run: dict, s: str = str(seed)) -> None:
            if row in (SCRATCH, DISTILLED):
                at_seeds[row][s] = run

        ts.run_task(work, root, fraction, seed, argparse.Namespace(
            **{**vars(base), "rows": ["scratch", "distilled"], "teacher_seed": 0}), record)
        for key in args.confirm:
            name = f"ablation_{key}_f{fraction:g}_s{seed}_teacher_s0{ts.student_suffix(args)}"
            run = ts.read_or_train(work, name, not args.report_only, lambda key=key, seed=seed:
                                   variant_config(key, work, root, fraction, args, seed))
            if run is not None:
                at_seeds.setdefault(key, {})[str(seed)] = run
                report()
    print(report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
