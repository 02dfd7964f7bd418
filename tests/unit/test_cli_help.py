"""Every `docpipe` command's --help shows an example, and its options as plain flags."""

from __future__ import annotations

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
        assert "<bool>" not in result.output, command  # flags render as flags
    assert not missing, f"no example in --help of: {missing}"
