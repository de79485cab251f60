"""`proxygate capture export`: whole conversations from the capture files, as fine-tuning JSONL.

Reads the files directly (no server needed, a running one may keep writing): each line of the
output is one conversation, ``{"messages": […], "tools": […]}``, metadata left out.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Annotated

import orjson
import typer

from proxygate.cli.app import ConfigOption, app, err_console, reported, settings_from
from proxygate.errors import ClientError, ProxyError
from proxygate.features.capture import export_conversations, iso_time
from proxygate.features.capture_files import ExportReport, read_records, write_dataset
from proxygate.server.usage_report import utc_time_ts

capture_app = typer.Typer(help="Dataset capture: export what was captured.", no_args_is_help=True)
app.add_typer(capture_app, name="capture")

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def since_ts(value: str, now: float) -> float:
    """``7d`` / ``12h`` / ``30m`` ago, or a date or time (``2026-11-01``, ``2026-11-01T08:00``; UTC)."""
    if match := _AGO.match(value.strip()):
        return now - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        return utc_time_ts(value)
    except ValueError:
        raise ClientError(
            f"--since: {value!r} is neither an age (7d, 12h, 30m) nor a date (2026-11-01)"
        ) from None


@capture_app.command("export")
def export(
    since: Annotated[
        str | None,
        typer.Option(help="Only conversations with a turn since then: 7d, 12h, 2026-11-01 (UTC)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the JSONL here (0600); default: standard output.")
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Capture directory (default: \\[capture] dir, else <data_dir>/capture)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Rebuild whole conversations from the capture files: one fine-tuning example a line."""
    with reported():
        capture_dir = directory or settings_from(config).capture.dir
        assert capture_dir is not None  # load_settings resolves it
        since_iso = iso_time(since_ts(since, time.time())) if since else ""
        report = ExportReport()
        conversations = export_conversations(
            read_records(capture_dir, report), since=since_iso, report=report
        )
        lines = (orjson.dumps(c) + b"\n" for c in conversations)
        if out is None:
            sys.stdout.buffer.writelines(lines)
            sys.stdout.buffer.flush()
        else:
            try:
                write_dataset(out, lines)
            except OSError as exc:
                raise ProxyError(f"--out: cannot write {out}: {exc.strerror or exc}") from None
    if report.files == 0:
        err_console.print(f"no capture files in {capture_dir}", highlight=False)
    for name in report.damaged_files:
        err_console.print(f"[yellow]warning:[/] {name} ends in a damaged record (kept what came before)")
    if report.bad_lines:
        err_console.print(f"[yellow]warning:[/] skipped {report.bad_lines} unreadable lines")
    if report.incomplete:
        err_console.print(
            f"[yellow]warning:[/] left out {report.incomplete} conversations whose beginning is not in the files"
        )
    where = f" to {out}" if out is not None else ""
    err_console.print(
        f"exported {len(conversations)} conversations from {report.files} files{where}", highlight=False
    )
