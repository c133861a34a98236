"""The documentation is true to the code: every command written in README.md and docs/ reaches a
real subcommand with flags its parser accepts, the CLI reference is what the parsers print, the site
builds with `mkdocs build --strict`, and no file speaks of the project's development history."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from marsedge import docs_cli

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
ENTRY_WORDS = {"marsedge", "edge-run", "train.py", "distill.py"}
SEPARATORS = {";", "&&", "||", "|", "do", "then"}


def commands_in(text: str) -> list[list[str]]:
    """Every marsedge / edge-run / train.py / distill.py invocation in the fenced blocks of a page,
    as words from the entry point on (comments, `$ ` prompts, `[` `]` of optional parts dropped)."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # an unbalanced quote in prose-like text: not a command line
                continue
            words = [w.strip("[]") for w in words]
            segment: list[str] = []
            for word in [*words, ";"]:
                if word not in SEPARATORS and not word.endswith(";"):
                    segment.append(word)
                    continue
                if word.endswith(";") and word != ";":  # `done;`: the word, then the separator
                    segment.append(word[:-1])
                start = next((i for i, w in enumerate(segment) if w in ENTRY_WORDS), None)
                if start is not None:
                    found.append([w for w in segment[start:] if w])
                segment = []
    return found


def problems_of(words: list[str]) -> list[str]:
    parser, used, rest = docs_cli.find_parser(words)
    known = docs_cli.option_strings(parser)
    subs = docs_cli.subcommands(parser)
    out = []
    if subs and rest and not rest[0].startswith("-"):
        out.append(f"`{' '.join(used)}` has no subcommand {rest[0]!r}")
    for word in rest:
        if word.startswith("-") and not re.fullmatch(r"-[0-9.]+", word):
            flag = word.split("=", 1)[0]
            if flag not in known:
                out.append(f"`{' '.join(used)}` does not accept {flag}")
    return out


def test_the_extractor_finds_commands_and_bad_flags():
    text = ("```bash\nmarsedge quantize a.onnx --calib d  # INT8\n"
            "edge-run in/ out/ \\\n  --model m.onnx --nope\n```\n")
    cmds = commands_in(text)
    assert cmds == [["marsedge", "quantize", "a.onnx", "--calib", "d"],
                    ["edge-run", "in/", "out/", "--model", "m.onnx", "--nope"]]
    assert problems_of(cmds[0]) == []
    assert problems_of(cmds[1]) == ["`edge-run` does not accept --nope"]
    assert problems_of(["marsedge", "data", "nonsense"]) == ["`marsedge data` has no subcommand 'nonsense'"]


def test_every_documented_command_is_accepted_by_its_parser():
    problems, count = [], 0
    for page in PAGES:
        if page.name == "cli.md":  # generated from the parsers themselves
            continue
        for words in commands_in(page.read_text()):
            count += 1
            problems += [f"{page.relative_to(REPO)}: {p}" for p in problems_of(words)]
    assert count > 40, f"only {count} commands found in README.md and docs/: is the extractor broken?"
    assert not problems, "\n".join(problems)


def test_cli_reference_matches_the_parsers():
    page = REPO / "docs" / "cli.md"
    assert page.read_text() == docs_cli.render(), (
        "docs/cli.md is stale: regenerate it with `python -m marsedge.docs_cli > docs/cli.md` (make docs)")


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs git and a git checkout to list the tracked files")
def test_no_file_speaks_of_development_history():
    pattern = (r"\bstops? [0-9]+|\bstop-[0-9]+|\bstop's\b|\b(this|that|earlier|previous|last|next) stop\b"
               r"|\bissues? #?[0-9]+|\bissue's\b|\bthe ([a-z]+ )?issue\b"
               r"|\brounds? of development\b|\bround [0-9]+\b"
               r"|\b(this|that|earlier|previous|second|first|next|later) session\b|\bsession notes\b")
    me = Path(__file__).relative_to(REPO).as_posix()
    found = subprocess.run(["git", "grep", "-nIiE", pattern, "--", ".", f":!{me}"], cwd=REPO,
                           capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    assert not found.stdout, "development history in tracked files:\n" + found.stdout[:4000]


def test_mkdocs_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[dev]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[dev]')")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stderr[-4000:]
    assert (tmp_path / "index.html").exists()


def test_readme_stays_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 180, f"README.md has {len(lines)} lines: move detail into docs/"
    for section in ("## Use your own data", "## On the rover"):
        assert section in lines, f"README.md lacks its '{section}' section"


def test_the_resume_page_lists_every_key_a_resume_may_change():
    from marsedge.train.engine.rundir import MAY_CHANGE_ON_RESUME

    page = (REPO / "docs" / "resume-and-overwrite.md").read_text()
    missing = [key for key in MAY_CHANGE_ON_RESUME if f"`{key}`" not in page
               and f"`.{key.rsplit('.', 1)[-1]}`" not in page]
    assert not missing, f"docs/resume-and-overwrite.md does not list {missing}"
