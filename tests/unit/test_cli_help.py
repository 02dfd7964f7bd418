"""Every `docpipe` command's --help shows an example, and its options as plain flags."""

from __future__ import annotations

import re
from typing import Any

import typer.main
from typer.testing import CliRunner

from docpipe.cli import app


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group: tenant, db
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def test_every_command_has_an_example_in_its_help() -> None:
    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 20
    runner = CliRunner()
    missing = []
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        if "Example" not in result.output:
            missing.append(" ".join(command))
        # Flags and values render as a shell's help does: no Python types, no braces.
        assert not re.search(r"<(str|int|float|bool|path|list\[.*?\])>", result.output), (
            command,
            result.output,
        )
        usage = result.output.splitlines()[0]
        assert usage.startswith("Usage: ") and "{" not in usage, usage
    assert not missing, f"no example in --help of: {missing}"
