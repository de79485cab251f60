"""The Typer app, its consoles, and the one way commands load settings and report errors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from proxygate import __version__
from proxygate.config import Settings, load_settings
from proxygate.errors import ProxyError


class _PlainArgument(TyperArgument):
    """``reset ACCOUNT``: an argument shown by its name alone, as every CLI's usage line does.

    Typer's own help writes a required argument as ``{ACCOUNT}`` followed by its Python type.
    """

    def _usage_display_name(self) -> str:
        name = str(self.display_name_raw)
        return name if self.required else f"[{name}]"

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


# Value names as CLIs write them (``--port INTEGER``), for Typer's ``<int>``-style labels.
_VALUE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER"}


def _plain(params: list[Any], ctx: Any) -> list[Any]:
    """Help without Python types: no ``<bool>`` after a flag, no ``{NAME} <str>`` for an argument."""
    for param in params:
        if isinstance(param, TyperArgument) and not isinstance(param, _PlainArgument):
            param.__class__ = _PlainArgument  # same fields; only how help shows it differs
        elif isinstance(param, TyperOption) and param.metavar is None:
            if param.is_flag:
                param.metavar = ""
            else:
                label = str(param.display_type_rich(ctx) or "").strip("<>")
                param.metavar = _VALUE_NAMES.get(label, label.upper()) or None
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(list(super().get_params(ctx)), ctx)


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(list(super().get_params(ctx)), ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """Sub-commands print plain help too, also those of a plain ``typer.Typer`` added here."""
        command = super().get_command(ctx, cmd_name)
        if type(command) is TyperCommand:
            command.__class__ = _Command
        elif type(command) is TyperGroup:
            command.__class__ = _Group
        return command


class Commands(typer.Typer):
    """A Typer app whose commands and sub-groups print plain help (see ``_plain``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=_Group, **kwargs)


app = Commands(
    name="proxygate",
    help="One local endpoint in front of many LLM accounts.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
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


def print_json(data: Any) -> None:
    """A command's ``--json`` output: ``data`` as JSON on stdout, indented and coloured on a terminal."""
    console.print_json(orjson.dumps(data).decode())


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


def _print_version(value: bool) -> None:
    if value:
        console.print(f"proxygate {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """One local endpoint in front of many LLM accounts."""


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return app.command(*args, **kwargs)


def main() -> None:
    app()
