"""`marsedge train` / `python train.py`: load a config, run its `mode` (a registered training mode).

    python train.py --config configs/teacher/r50_2x_sk1_aspp.yaml data.root=/data/ai4mars
    torchrun --nproc_per_node=4 train.py --config ... run.amp=bf16 run.channels_last=true
    python train.py --config ... --resume          # continue runs/<name>/last.pt exactly
    python train.py --config ... --resume runs/x/last.pt   # continue that checkpoint
    python train.py --config ... --overwrite       # replace an earlier run of this name

A folder holding a run is never written over unasked, and a resume may change only the keys its
--help lists (docs/resume-and-overwrite.md; marsedge.train.engine.rundir).

best.pt is chosen on the `val` split; the summary's "final test" line is the test splits scored
once, at the end, with it (runs/<name>/test_metrics.json). The summary (time, img/s, the selection,
the files, the export command) is also runs/<name>/summary.json; docs/watching-training.md.

Modes are registered Jobs (marsedge.train.modes, marsedge.train.engine.job): each names its config
class (TrainConfig or a subclass with the mode's own section), and `run_job` runs it. This module
names no mode. Nothing heavy is imported here at module level: torch loads only when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from marsedge.train.engine.rundir import MAY_CHANGE_ON_RESUME

    parser.add_argument("--config", required=True, help="YAML config (configs/teacher/*.yaml, configs/demo/)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue runs/<name>/last.pt (or CHECKPOINT) exactly. The model and config "
                             "must be the run's; only these keys may change (recorded in "
                             f"config_history.jsonl): {', '.join(MAY_CHANGE_ON_RESUME)}")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in runs/<name>/ (without it, a folder holding a run "
                             "is refused: continue it with --resume)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a segmentation model (finetune, pretrain, semisup, ...)",
                              description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=handle)


def _resume_argument(args: argparse.Namespace) -> None:
    """`--resume key=value`: argparse took an override for the optional path; give it back."""
    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        args.overrides = [args.resume, *args.overrides]
        args.resume = True


def handle(args: argparse.Namespace) -> int:
    from marsedge.train.config import load_train_config, read_mode
    from marsedge.train.modes import resolve_mode

    _resume_argument(args)
    mode = resolve_mode(read_mode(args.config, args.overrides))
    cfg = load_train_config(mode.config, args.config, args.overrides)  # every key checked before work
    if args.print_config:
        import yaml

        from marsedge.config import to_dict

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    from marsedge.train.engine.guard import sigterm_as_sigint

    with sigterm_as_sigint():  # SIGTERM, like Ctrl-C: last.pt written, a line on how to resume
        result = mode.run(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.get("is_main", True):
        _print_summary(cfg, result)
    return 130 if result["interrupted"] else 0


def _print_summary(cfg, result: dict) -> None:
    if result["interrupted"]:
        print(f"[{cfg.name}] interrupted at step {result['step']}; resume with --resume "
              f"({result['run_dir']}/last.pt)")
        return
    from marsedge.train.engine.summary import summary_lines

    print("\n".join(summary_lines(result["run_summary"])))


def main(argv: list[str] | None = None) -> int:
    from marsedge.cli import run

    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(handle, args)
