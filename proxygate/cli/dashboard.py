"""``proxygate dashboard``: open the running server's dashboard, logged in by a one-time link.

Like Jupyter's token URL: the CLI (holding the admin token) asks the server for a login code
that works once and only for a couple of minutes, then opens the browser on it, or prints it
with ``--no-browser`` (a headless machine, or a browser elsewhere through an SSH tunnel).
"""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from proxygate.cli import admin_client
from proxygate.cli.admin_client import find_server
from proxygate.cli.app import AddrOption, ConfigOption, app, console, reported, settings_from
from proxygate.errors import PoolError


@app.command()
def dashboard(
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the one-time login link instead of opening a browser.")
    ] = False,
    config: ConfigOption = None,
    addr: AddrOption = None,
) -> None:
    """Open the dashboard of the running server in a browser, already logged in (the link works once)."""
    with reported():
        settings = settings_from(config)
        server = find_server(settings, addr)
        if server is None:
            raise PoolError(
                f"no proxygate server answers at {addr or settings.addr}: start one with `proxygate serve`"
            )
        link = admin_client.call(server, "/admin/api/dashboard/login-link", method="POST")
        url = f"{server.base_url}{link['path']}"
    console.print("The dashboard, logged in by a link that works once, for 2 minutes:", highlight=False)
    console.print(f"    {url}", highlight=False, markup=False, soft_wrap=True)
    if not no_browser and not webbrowser.open(url):
        console.print("(no browser could be opened here: open the link yourself)", highlight=False)
