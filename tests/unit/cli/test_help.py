"""Help reads like any CLI's (no Python types), --version works, and ids print literally."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from proxygate import __version__
from proxygate.cli import app
from tests.conftest import write_account


def _all_commands() -> list[list[str]]:
    group = typer.main.get_command(app)
    paths: list[list[str]] = [[]]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        paths.append([name])
        paths.extend([name, sub] for sub in getattr(command, "commands", {}))
    return paths


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p) or "proxygate")
def test_help_shows_no_python_types(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for python_type in ("<bool>", "<str>", "<int>", "<float>", "<path>", "{"):
        assert python_type not in result.output


def test_an_argument_shows_its_name_in_the_usage_line() -> None:
    result = CliRunner().invoke(app, ["reset", "--help"], env={"COLUMNS": "200"})
    assert "Usage: proxygate reset [OPTIONS] ACCOUNT" in result.output


def test_version_option() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert (result.exit_code, result.output) == (0, f"proxygate {__version__}\n")


def test_ids_and_names_print_literally_not_as_markup(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('addr = "127.0.0.1:1"\npool_dir = "pool"\ndata_dir = "data"\n')
    env = {"PROXYGATE_CONFIG": str(tmp_path / "config.toml"), "COLUMNS": "250"}
    write_account(
        tmp_path / "pool", "apikeys", "x", {"id": "[red]x", "provider": "deepseek", "api_key": "sk-12345678"}
    )
    note = " (no server running; applies when the server starts)"
    runner = CliRunner()
    assert runner.invoke(app, ["disable", "[red]x"], env=env).output == f"disabled [red]x{note}\n"
    assert runner.invoke(app, ["reset", "[red]x"], env=env).output == f"reset [red]x{note}\n"
    assert "[red]x" in runner.invoke(app, ["list"], env=env).output
    assert "[red]x" in runner.invoke(app, ["status"], env=env).output
    missing = runner.invoke(app, ["enable", "[bold]ghost"], env=env)
    assert missing.output == "error: no account '[bold]ghost' in the pool (see `proxygate list`)\n"
