"""`marsedge train` / `python train.py`: load a config, dispatch its `mode` to the mode's module.

    python train.py --config configs/teacher/r50_2x_sk1_aspp.yaml data.root=/data/ai4mars
    torchrun --nproc_per_node=4 train.py --config ... run.amp=bf16 run.channels_last=true
    python train.py --config ... --resume          # continue runs/<name>/last.pt exactly

Each mode module defines `CONFIG` (TrainConfig or a subclass with the mode's own section) and
`run(cfg, resume=False) -> dict` (the loop's summary). Adding a mode is one line in MODES. Nothing
heavy is imported here at module level: torch loads only when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import math

from marsedge.errors import ConfigError

# mode -> module defining CONFIG and run(cfg, resume)
MODES: dict[str, str] = {
    "finetune": "marsedge.train.finetune",
    "pretrain": "marsedge.train.pretrain",
    "semisup": "marsedge.train.semisup",
    "linear_eval": "marsedge.train.linear_eval",
    "distill": "marsedge.distill.loop",
}


def resolve_mode(mode: str):
    """The module implementing `mode`; an unknown mode fails naming the config key."""
    if mode not in MODES:
        raise ConfigError(f"config key 'mode': unknown mode {mode!r} (valid: {', '.join(sorted(MODES))})")
    return importlib.import_module(MODES[mode])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (configs/teacher/*.yaml, configs/demo/)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    parser.add_argument("--resume", action="store_true", help="continue runs/<name>/last.pt exactly")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a segmentation model (finetune, pretrain, semisup, ...)",
                              description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=handle)


def _format(value) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"


def handle(args: argparse.Namespace) -> int:
    from marsedge.train.config import load_train_config, read_mode

    module = resolve_mode(read_mode(args.config, args.overrides))
    cfg = load_train_config(module.CONFIG, args.config, args.overrides)  # every key checked before work
    if args.print_config:
        import yaml

        from marsedge.config import to_dict

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    result = module.run(cfg, resume=args.resume)
    if result.get("is_main", True):
        _print_summary(cfg, result)
    return 130 if result["interrupted"] else 0


def _print_summary(cfg, result: dict) -> None:
    if result["interrupted"]:
        print(f"[{cfg.name}] interrupted at step {result['step']}; resume with --resume "
              f"({result['run_dir']}/last.pt)")
        return
    metrics = result["last_metrics"]
    scalars = {k: v for k, v in metrics.items() if "/" not in k and isinstance(v, float)}
    shown = ", ".join(f"{k} {_format(v)}" for k, v in scalars.items())
    best = result["best"]
    print(f"[{cfg.name}] {result['epoch']} epochs, {result['step']} steps"
          + (" (stopped early)" if result["stopped_early"] else "")
          + (f"; final test: {shown}" if shown else "")
          + (f"; best {best['metric']} {_format(best['value'])} at epoch {best['epoch']}"
             if best["value"] is not None else "")
          + f"; {result['run_dir']}/best.pt")


def main(argv: list[str] | None = None) -> int:
    from marsedge.cli import run

    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(handle, args)
