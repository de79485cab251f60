"""The Typer app, its consoles, and the one way commands load settings and report errors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from proxygate.config import Settings, load_settings
from proxygate.errors import ProxyError

app = typer.Typer(
    name="proxygate",
    help="One local endpoint in front of many LLM accounts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="config.toml to use (default: $PROXYGATE_CONFIG, ./config.toml, ~/.proxygate/config.toml).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
AddrOption = Annotated[
    str | None,
    typer.Option(
        "--addr",
        help="The running server's HOST:PORT (default: from <data_dir>/server.json, else addr in the config).",
        metavar="HOST:PORT",
        show_default=False,
    ),
]


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    return load_settings(config, os.environ, overrides)


@contextmanager
def reported() -> Iterator[None]:
    """At the command edge: a ``ProxyError`` becomes one red line and exit code 1."""
    try:
        yield
    except ProxyError as exc:
        err_console.print(f"[red]error:[/] {escape(exc.message)}", highlight=False)
        raise typer.Exit(1) from None


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return app.command(*args, **kwargs)


def main() -> None:
    app()
