"""The command-line reference, generated from the argparse parsers themselves.

    python -m marsedge.docs_cli > docs/cli.md      (or `make docs`)

Covers every `marsedge` subcommand, `edge-run`, `python train.py` and `python distill.py`. The text is
each parser's own `--help` at a fixed width, so the page says exactly what the commands accept;
tests/test_docs.py fails when docs/cli.md differs from what this prints. `walk` and `find_parser` are
also what that test uses to check every command written in README.md and docs/.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

WIDTH = 100  # help text width: fixed, so the page does not depend on the terminal that made it

HEADER = """\
# Command-line reference

Generated from the argparse parsers by `python -m marsedge.docs_cli > docs/cli.md` (`make docs`);
`tests/test_docs.py` fails when this page is stale. Every command also answers `--help`.

Errors are one line naming the file or key; usage and config errors exit 2, data errors exit 1
([troubleshooting](troubleshooting.md)).
"""


def entry_points() -> dict[str, argparse.ArgumentParser]:
    """The four top-level commands, by the words a user types."""
    from marsedge.cli import build_parser as marsedge_parser
    from marsedge.edge.run import build_parser as edge_run_parser
    from marsedge.train.cli import add_arguments

    def script(prog: str, description: str) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        add_arguments(parser)
        return parser

    from marsedge.distill import cli as distill_cli
    from marsedge.train import cli as train_cli

    return {
        "marsedge": marsedge_parser(),
        "edge-run": edge_run_parser(),
        "python train.py": script("train.py", train_cli.__doc__.splitlines()[0]),
        "python distill.py": script("distill.py", distill_cli.__doc__.splitlines()[0]),
    }


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subparsers of `parser` by name (aliases included), or {}."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def walk(name: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command words, parser) for `parser` and every subcommand below it, in registration order."""
    yield name, parser
    seen: set[int] = set()
    for sub_name, sub in subcommands(parser).items():
        if id(sub) not in seen:  # an alias points at the same parser: list it once
            seen.add(id(sub))
            yield from walk(f"{name} {sub_name}", sub)


def find_parser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str], list[str]]:
    """The parser a command line reaches: (parser, the words that chose it, the rest of the words).
    `words` starts with an entry point (`marsedge`, `edge-run`, `train.py`, `distill.py`)."""
    points = entry_points()
    head = words[0] if words[0] in points else f"python {words[0]}"
    if head not in points:
        raise KeyError(f"{words[0]!r} is not a marsedge command")
    parser, used, rest = points[head], [head], list(words[1:])
    while rest and rest[0] in subcommands(parser):
        parser = subcommands(parser)[rest[0]]
        used.append(rest.pop(0))
    return parser, used, rest


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def help_text(parser: argparse.ArgumentParser) -> str:
    """The parser's --help at WIDTH columns, whatever its formatter class."""
    original = parser.formatter_class
    parser.formatter_class = lambda prog: original(prog, width=WIDTH)
    try:
        return parser.format_help().rstrip() + "\n"
    finally:
        parser.formatter_class = original


def render() -> str:
    parts = [HEADER]
    for top, parser in entry_points().items():
        for name, sub in walk(top, parser):
            parts.append(f"\n## `{name}`\n\n```text\n{help_text(sub)}```\n")
    return "".join(parts)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
