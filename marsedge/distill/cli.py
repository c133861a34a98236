"""`marsedge distill` / `python distill.py`: distil a frozen teacher into a small student.

    python distill.py --config configs/student/mnv2_from_r101x2.yaml data.root=/data/ai4mars
    torchrun --nproc_per_node=4 distill.py --config ... run.amp=bf16
    python distill.py --config ... --resume        # continue runs/<name>/last.pt exactly
    python distill.py --config ... --overwrite     # replace an earlier run of this name

Distillation is the `distill` mode of the training command (registered in marsedge.distill.mode): same
arguments, runs folder, loop and summary line as train.py. The result is runs/<name>/student.pt,
ready for export. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse

from marsedge.errors import ConfigError


def register(subparsers) -> None:
    from marsedge.train.cli import add_arguments

    p = subparsers.add_parser("distill", help="distil a frozen teacher into a student (pixel KD, "
                              "channel-wise, feature)", description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from marsedge.train import cli as train_cli
    from marsedge.train.config import read_mode

    mode = read_mode(args.config, args.overrides)
    if mode != "distill":
        raise ConfigError(f"config key 'mode' is {mode!r}: distill.py runs student configs (mode: distill); "
                          "use train.py for the other modes")
    return train_cli.handle(args)


def main(argv: list[str] | None = None) -> int:
    from marsedge.cli import run
    from marsedge.train.cli import add_arguments

    parser = argparse.ArgumentParser(prog="distill.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(handle, args)
