"""The ``proxygate`` command: thin Typer commands that parse, call the right layer and print."""

from proxygate.cli.app import app, main
from proxygate.cli import accounts, serve  # noqa: F401  (registers the commands)

__all__ = ["app", "main"]
