"""The `marsedge` console command: one subcommand family per area, registered lazily.

Each area has a `cli.py` with `register(subparsers)`; those modules import nothing heavy at module
level (torch is imported inside the handlers), so `marsedge data ...` and the edge commands run on
a machine without torch. Errors derived from MarsedgeError print one line and exit with their code
(2 usage/config, 1 data); argparse usage errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from marsedge import __version__
from marsedge.errors import MarsedgeError

# module path of each area's CLI; each registers one or more subcommands
AREAS = (
    "marsedge.data.cli",
    "marsedge.models.cli",
    "marsedge.train.cli",
    "marsedge.ssl.cli",
    "marsedge.distill.cli",
    "marsedge.edge.cli",
    "marsedge.edge.ros2_cli",
    "marsedge.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marsedge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"marsedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in AREAS:  # a broken area import fails loudly: no command silently goes missing
        importlib.import_module(name).register(sub)
    return parser


def run(handler, args: argparse.Namespace) -> int:
    """Call a subcommand handler, turning project errors into one line and an exit code."""
    try:
        return int(handler(args) or 0)
    except MarsedgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
