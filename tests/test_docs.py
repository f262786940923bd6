"""The command-line reference (docs/cli.md) names every option of every command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from agnostic_saliency.cli import build_parser

CLI_PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def _section(page: str, command: str) -> str:
    """The text of the page's ``## `command` ...`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## `{command}`.*?(?=^## |\Z)", page, flags=re.M | re.S)
    assert match, f"docs/cli.md has no section for `{command}`"
    return match.group(0)


COMMANDS = sorted(_subparsers())


def test_the_commands_are_the_documented_ones():
    assert COMMANDS == ["explain", "map", "scan", "scan-many"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_in_the_cli_reference(command):
    section = _section(CLI_PAGE.read_text(encoding="utf-8"), command)
    options = [option for action in _subparsers()[command]._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"]
    assert options
    missing = [option for option in options if not re.search(rf"`{re.escape(option)}[ `]", section)]
    assert not missing, f"docs/cli.md lacks these `{command}` options: {missing}"
