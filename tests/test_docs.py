"""The docs match the CLI: the commands table lists every option, every documented flag exists,
and every link in README.md and docs/ resolves (files and heading anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from medsynth.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
FLAG = re.compile(r"--[a-z][a-z0-9-]*")
COMMANDS = {name: {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")}
            for name, cmd in typer.main.get_command(app).commands.items()}


def table_rows() -> dict[str, str]:
    """The first cell of each row of the user guide's commands table, by command."""
    rows = {}
    for line in (ROOT / "docs" / "user-guide.md").read_text().splitlines():
        match = re.match(r"\| `medsynth ([a-z-]+)([^|]|\\\|)*`", line)
        if match:
            rows[match.group(1)] = match.group(0)
    return rows


def test_the_commands_table_lists_every_option_of_every_command():
    rows = table_rows()
    assert set(rows) == set(COMMANDS), "commands missing from (or unknown to) the user guide's table"
    for name, options in COMMANDS.items():
        listed = set(FLAG.findall(rows[name]))
        assert listed == options, f"{name}: lacks {sorted(options - listed)}, unknown {sorted(listed - options)}"


def documented_invocations() -> list[tuple[str, str, str]]:
    """(page, command, rest of the line) for every ``medsynth COMMAND ...`` in a code span or block."""
    found = []
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        code = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
        code += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in code:
            for match in re.finditer(r"\bmedsynth ([a-z][a-z-]*)(.*)", line):
                found.append((page.name, match.group(1), re.split(r"\bmedsynth ", match.group(2))[0]))
    return found


def test_every_flag_the_docs_use_exists():
    invocations = documented_invocations()
    assert len(invocations) > 20  # the parser finds the docs' commands
    wrong = [f"{page}: medsynth {command} {flag}" for page, command, rest in invocations if command in COMMANDS
             for flag in FLAG.findall(rest) if flag not in COMMANDS[command] | {"--help"}]
    assert not wrong, "options the CLI does not have: " + "; ".join(wrong)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # web links are not checked offline
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{page.name}: " + ", ".join(broken)
