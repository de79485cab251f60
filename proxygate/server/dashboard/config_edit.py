"""``POST /admin/api/config/routing``: edit the user's config.toml from the Routing page.

The file is the user's: tomlkit edits it in place, so their comments, order and layout stay.
The edited text is validated with ``load_settings`` before anything is written; the previous
file is kept as ``config.toml.bak``; the new one replaces it atomically with the same mode.

What applies live: ``[routing]`` ``active`` and ``aliases`` (the broker takes the new routing
settings and rebuilds its routes at once) and ``[budgets.<account>]`` (the broker's budgets take
the new limits; what was spent so far today and this month still counts). Everything else in
the file applies at the next start; the page says so.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import tomlkit
from aiohttp import web

from proxygate.config import Settings, load_settings
from proxygate.errors import ClientError, ConfigError, ProxyError
from proxygate.server.admin import guard
from proxygate.server.dashboard.api import json_body
from proxygate.server.guard import render_for_path
from proxygate.server.keys import BROKER, SETTINGS

BACKUP_SUFFIX = ".bak"
LIVE_KEYS = ("active", "aliases", "budgets")
"What this call edits: [routing] active and aliases, [budgets.<account>]; all apply at once."
BUDGET_FIELDS = ("daily_tokens", "monthly_tokens", "daily_usd", "monthly_usd")


def edited_config(text: str, changes: dict[str, Any]) -> str:
    """``text`` with ``[routing]`` ``active`` and/or ``aliases`` replaced; the rest untouched."""
    unknown = sorted(set(changes) - set(LIVE_KEYS))
    if unknown or not changes:
        raise ClientError(f"expected {' and/or '.join(LIVE_KEYS)}; got {', '.join(unknown) or 'nothing'}")
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"config.toml does not parse: {exc}") from None
    routing = doc.get("routing")
    if routing is None:
        routing = tomlkit.table()
        doc["routing"] = routing
    if "active" in changes:
        if not isinstance(changes["active"], str):
            raise ClientError("active: expected the name of a routing config")
        routing["active"] = changes["active"]
    if "aliases" in changes:
        aliases = changes["aliases"]
        if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in aliases.items()
        ):
            raise ClientError("aliases: expected an object of model name → model name")
        table = tomlkit.table()
        for name, target in aliases.items():
            table[name] = target
        routing["aliases"] = table
    if "budgets" in changes:
        _edit_budgets(doc, changes["budgets"])
    return tomlkit.dumps(doc)


def _edit_budgets(doc: Any, budgets: Any) -> None:
    """Set each named account's ``[budgets.<id>]`` (no limit left: the table goes); others untouched."""
    if not isinstance(budgets, dict):
        raise ClientError("budgets: expected an object of account id → limits")
    table = doc.get("budgets")
    if table is None:
        table = tomlkit.table(is_super_table=True)
        doc["budgets"] = table
    for account_id, limits in budgets.items():
        if not isinstance(limits, dict) or set(limits) - set(BUDGET_FIELDS):
            raise ClientError(f"budgets.{account_id}: expected some of {', '.join(BUDGET_FIELDS)}")
        values: dict[str, int | float] = {}
        for key, value in limits.items():
            if value in (None, ""):
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ClientError(f"budgets.{account_id}.{key}: expected a number ≥ 0")
            if value:
                values[key] = int(value) if key.endswith("tokens") else float(value)
        if not values:
            table.pop(account_id, None)
            continue
        entry = tomlkit.table()
        for key, value in values.items():
            entry[key] = value
        table[account_id] = entry


def validated_settings(path: Path, text: str) -> Settings:
    """The settings ``text`` gives when it sits where ``path`` is (relative paths alike)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.check.", suffix=".toml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return load_settings(Path(tmp), {})
    finally:
        os.unlink(tmp)


def replace_file(path: Path, text: str) -> Path:
    """Keep the old file as ``<name>.bak``, then put ``text`` in place atomically, same mode."""
    mode = path.stat().st_mode & 0o777
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    backup.write_bytes(path.read_bytes())
    backup.chmod(mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup


def _edit(path: Path, changes: dict[str, Any]) -> tuple[Settings, Path]:
    text = edited_config(path.read_text(encoding="utf-8"), changes)
    try:
        settings = validated_settings(path, text)
    except ConfigError as exc:  # names the key; nothing is written
        raise ClientError(f"not written: {exc.message}") from None
    return settings, replace_file(path, text)


async def edit_routing(request: web.Request) -> web.Response:
    path = request.app[SETTINGS].config_path
    try:
        changes = await json_body(request)
        if path is None:
            raise ClientError(
                "no config file: the server runs on defaults (start it with --config FILE)", status=409
            )
        edited, backup = await asyncio.to_thread(_edit, path, changes)
    except ProxyError as exc:
        return render_for_path(request, exc)
    broker = request.app[BROKER]
    if "budgets" in changes:
        budgets = broker.budgets
        budgets.budgets = dict(edited.budgets)
        # A first dollar budget: requests are priced from now on (the day's earlier spending
        # counts from the usage history at the next start).
        budgets.counts_usd = budgets.prices is not None and any(
            b.daily_usd or b.monthly_usd for b in edited.budgets.values()
        )
    routing = edited.routing
    broker.settings = routing
    getattr(broker, "_other_routes", {}).clear()  # routes of tenants' configs: built with old aliases
    broker.use_route(routing.active)  # rebuilds the active config's routes
    return web.json_response(
        {
            "config_path": str(path),
            "backup": str(backup),
            "route": broker.route_label(),
            "applied": list(changes),
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/api/config/routing", guard(edit_routing))
