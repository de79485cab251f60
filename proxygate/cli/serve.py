"""``proxygate serve`` and ``proxygate version``."""

from __future__ import annotations

import ipaddress
import logging
from typing import IO, Annotated, cast

import typer

from proxygate import __version__
from proxygate.cli.app import ConfigOption, app, console, err_console, reported, settings_from
from proxygate.config import Settings
from proxygate.errors import ConfigError


def setup_logging(settings: Settings) -> None:
    """Every line ``serve`` writes goes through one formatter (text or json), and to the log file."""
    from proxygate.server import logs

    logs.setup(
        settings.log_level,
        settings.log_format,
        log_file=settings.log_file,
        log_file_max_mb=settings.log_file_max_mb,
        log_file_count=settings.log_file_count,
    )
    if settings.log_format == "json":  # the command's own error line too: every line is JSON
        err_console.file = cast("IO[str]", logs.LogLines(logging.getLogger("proxygate"), logging.ERROR))


def is_loopback_host(host: str) -> bool:
    host = host.removeprefix("[").removesuffix("]")  # addr = "[::1]:19527"
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse to listen beyond loopback without a proxy token: anyone could spend the pool."""
    if not is_loopback_host(settings.host) and not settings.proxy_token:
        raise ConfigError(
            f"addr: {settings.addr} listens beyond this machine, so anyone who can reach it could spend "
            "your accounts; set proxy_token (or PROXYGATE_PROXY_TOKEN) and give it to your clients, "
            "or listen on 127.0.0.1"
        )


@app.command()
def serve(
    config: ConfigOption = None,
    addr: Annotated[
        str | None, typer.Option(help="Listen on HOST:PORT (default 127.0.0.1:19527).", metavar="HOST:PORT")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Listen host (keeps the configured port).", metavar="HOST")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port (keeps the configured host).", metavar="PORT")
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level", help="debug, info, warn or error (default: log_level, or info).", metavar="LEVEL"
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Processes serving the port (default: workers, or 1; Linux).", metavar="N"),
    ] = None,
) -> None:
    """Run the proxy until SIGINT/SIGTERM: then drain streams in flight (a second signal cuts them)."""
    from proxygate.server.app import run
    from proxygate.server.lifecycle import supervisor_of_this_worker
    from proxygate.server.supervisor import can_share_port, run_workers

    with reported():
        settings = settings_from(config, addr=addr, log_level=log_level)
        if host is not None or port is not None:
            addr = f"{host or settings.host}:{settings.port if port is None else port}"
            settings = settings_from(config, addr=addr, log_level=log_level)
        check_exposure(settings)
        count = settings.workers if workers is None else workers
        if count < 1:
            raise ConfigError(f"workers: {count} is not a number of processes (1 or more)")
        setup_logging(settings)
        log = logging.getLogger("proxygate")
        if supervisor_of_this_worker() is not None:  # a worker of `serve --workers N`: serve, no more
            run(settings)
            return
        log.info(
            "config: %s; pool: %s; data: %s",
            settings.config_path or "defaults",
            settings.pool_dir,
            settings.data_dir,
        )
        if count > 1 and not can_share_port():
            log.warning("workers = %d needs SO_REUSEPORT as Linux has it: serving with one process", count)
            count = 1
        if count > 1:
            run_workers(settings, count, log_level=log_level)
        else:
            run(settings)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"proxygate {__version__}")
