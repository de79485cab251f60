"""Commands run in this process through typer's CliRunner, configured by a config.toml in a test's dir."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from proxygate.cli import app
from tests.conftest import free_port
from tests.serving import write_config


def make_env(tmp_path: Path, extra: str = "") -> dict[str, str]:
    """The environment naming ``<tmp_path>/config.toml`` (a free loopback port, ``extra`` appended)."""
    config = write_config(tmp_path, f"127.0.0.1:{free_port()}", extra)
    return {"PROXYGATE_CONFIG": str(config), "COLUMNS": "250"}


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env, input=stdin)
