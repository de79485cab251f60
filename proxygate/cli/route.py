"""`proxygate route list` / `route use NAME`: see and switch the active routing config.

A running server switches at once through the admin API (the dashboard uses the same call)
and remembers the choice in the store; with no server running the choice is written to the
store directly and applies at the next start.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from proxygate.cli.accounts import NOT_RUNNING_NOTE, admin_get
from proxygate.cli.app import (
    AddrOption,
    Commands,
    ConfigOption,
    JsonOption,
    app,
    console,
    print_json,
    reported,
    settings_from,
)
from proxygate.config import Settings
from proxygate.server.broker_state import active_route, save_active_route
from proxygate.store.open import open_store

route_app = Commands(help="Routing configs: list them, switch the active one.", no_args_is_help=True)
app.add_typer(route_app, name="route")


def offline_routes(settings: Settings) -> list[dict[str, Any]]:
    """The configs from config.toml, the active one as the store remembers it."""
    store = open_store(settings)
    try:
        active = active_route(store, settings) or settings.routing.active
    finally:
        store.close()
    return [
        {
            "name": name,
            "strategy": config.strategy,
            "active": name == active,
            "tiers": {
                tier: {"accounts": list(t.accounts), "model": t.model, "fallback": list(t.fallback)}
                for tier, t in config.tiers.items()
            },
        }
        for name, config in sorted(settings.routing.configs.items())
    ]


def _tiers_text(tiers: dict[str, Any]) -> str:
    parts = []
    for tier, t in tiers.items():
        text = f"{tier}: {', '.join(t['accounts'])}"
        if t["model"]:
            text += f" → {t['model']}"
        if t["fallback"]:
            text += f" (fallback {', '.join(t['fallback'])})"
        parts.append(text)
    return "\n".join(parts) or "every account serving the model"


@route_app.command("list")
def list_routes(config: ConfigOption = None, as_json: JsonOption = False, addr: AddrOption = None) -> None:
    """Show every routing config: strategy, tiers; * marks the active one."""
    with reported():
        settings = settings_from(config)
        live = admin_get(settings, "/admin/api/routes", addr=addr)
        routes = live["routes"] if live is not None else offline_routes(settings)
    if as_json:
        print_json(routes)
        return
    table = Table("", "name", "strategy", "tiers")
    for r in routes:
        table.add_row(
            "*" if r["active"] else "", escape(r["name"]), r["strategy"], escape(_tiers_text(r["tiers"]))
        )
    console.print(table)


@route_app.command("use")
def use_route(
    name: Annotated[
        str, typer.Argument(help="Routing config name from `proxygate route list`.", metavar="NAME")
    ],
    config: ConfigOption = None,
    addr: AddrOption = None,
) -> None:
    """Switch the active routing config (a running server switches at once; kept across restarts)."""
    with reported():
        settings = settings_from(config)
        live = admin_get(settings, "/admin/api/route", method="POST", body={"name": name}, addr=addr)
        if live is None:  # no server running: remember it for the next start
            store = open_store(settings)
            try:
                save_active_route(store, settings, name)
            finally:
                store.close()
            label = f"{name}/{settings.routing.configs[name].strategy}"
        else:
            label = live["route"]
    console.print(f"route: [bold]{escape(label)}[/]" + ("" if live is not None else NOT_RUNNING_NOTE))
