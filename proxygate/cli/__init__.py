"""The ``proxygate`` command: thin Typer commands that parse, call the right layer and print."""

from proxygate.cli import accounts, capture, logs, oauth, route, serve, service, usage  # noqa: F401  (registers the commands)
from proxygate.cli.app import app, main

__all__ = ["app", "main"]
