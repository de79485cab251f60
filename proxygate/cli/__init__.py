"""The ``proxygate`` command: thin Typer commands that parse, call the right layer and print."""

from proxygate.cli import (  # noqa: F401  (registers the commands)
    accounts,
    capture,
    dashboard,
    doctor,
    logs,
    oauth,
    route,
    secrets,
    serve,
    service,
    setup,
    store,
    tenant,
    usage,
)
from proxygate.cli.app import app, main

__all__ = ["app", "main"]
