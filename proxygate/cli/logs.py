"""``proxygate logs``: the running server's log, wherever it goes (file, journal, or where it says)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from proxygate.cli.app import ConfigOption, app, err_console, reported, settings_from

FollowOption = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")]
LinesOption = Annotated[int, typer.Option("--lines", "-n", help="How many of the last lines to show.", min=0)]


@app.command()
def logs(config: ConfigOption = None, follow: FollowOption = False, lines: LinesOption = 50) -> None:
    """Show the server's log: log_file when set, else the systemd journal, else say where it goes."""
    from proxygate.server.logs import find_log_source, follow_lines, last_lines

    with reported():
        settings = settings_from(config)
    source = find_log_source(settings.log_file, settings.data_dir, home=Path.home(), environ=os.environ)
    if source.kind == "journal":
        journalctl = shutil.which("journalctl")
        if journalctl is None:
            err_console.print("[red]error:[/] a systemd unit exists but journalctl is not on PATH")
            raise typer.Exit(1)
        args = [journalctl, *source.journal_args, "-n", str(lines), "--no-pager", "-o", "cat"]
        if follow:
            args.append("-f")
        try:
            code = subprocess.call(args)
        except KeyboardInterrupt:
            code = 0
        raise typer.Exit(code)
    if source.kind == "none" or source.path is None:
        err_console.print(source.where, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    path = source.path
    try:
        tail, offset = last_lines(path, lines)
        for line in tail:
            _print(line)
        if follow:
            for line in follow_lines(path, offset=offset):
                _print(line)
    except FileNotFoundError:
        err_console.print(f"no log yet: {path} does not exist (is the server running?)", markup=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


def _print(line: str) -> None:
    # Raw text, not rich: a log line is data, and its brackets are not markup.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
