"""The admin API under /admin/api: what `proxygate status`, `reset` and `route use` talk to.

Guarded by ``admin_token`` (Bearer or X-ProxyGate-Admin-Token); with no token set, only
loopback peers are served. Account entries carry ids and masked credentials, never secrets.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from proxygate.broker import Broker
from proxygate.config import Settings
from proxygate.errors import PoolError, ProxyError
from proxygate.pool.files import PoolSnapshot
from proxygate.server.broker_state import save_active_route
from proxygate.server.keys import BROKER, POOL, SETTINGS, STORE
from proxygate.store import Store, today

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _guard(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        token = request.app[SETTINGS].admin_token
        if token:
            auth = request.headers.get("authorization", "")
            given = (
                auth[7:]
                if auth[:7].lower() == "bearer "
                else request.headers.get("x-proxygate-admin-token", "")
            )
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _json({"error": "missing or wrong admin token"}, 401)
        elif not _is_loopback(request.remote):
            return _json({"error": "the admin API is loopback-only unless admin_token is set"}, 403)
        return await handler(request)

    return guarded


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def status_report(settings: Settings, broker: Broker, snapshot: PoolSnapshot, store: Store) -> dict[str, Any]:
    """Every account's health and today's usage, plus files that failed to load.

    The same report for a running server (live in-flight counts) and for `proxygate status`
    with no server (the broker restored from the store).
    """
    usage: dict[str, dict[str, int]] = {}
    for row in store.usage(today()):
        entry = usage.setdefault(row.account_id, {"requests": 0, "tokens": 0, "errors": 0})
        entry["requests"] += row.totals.requests
        entry["errors"] += row.totals.errors
        entry["tokens"] += row.totals.tokens
    now = broker.clock()
    return {
        "addr": settings.addr,
        "pool_dir": str(settings.pool_dir),
        "route": broker.route_label(),
        "accounts": [
            {
                **broker.describe(account, now),
                "today": usage.get(account.id, {"requests": 0, "tokens": 0, "errors": 0}),
                "inflight": broker.state(account.id).inflight,
            }
            for account in snapshot.accounts
        ],
        "invalid_files": [{"path": str(f.path), "reason": f.reason} for f in snapshot.invalid],
    }


async def status(request: web.Request) -> web.Response:
    app = request.app
    return _json(status_report(app[SETTINGS], app[BROKER], app[POOL][0], app[STORE]))


async def reset(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    try:
        account = request.app[POOL][0].find(ref)
    except PoolError as exc:
        return _json({"error": exc.message}, 404)
    request.app[BROKER].reset(account.id)
    return _json({"reset": account.id})


async def routes(request: web.Request) -> web.Response:
    """Every routing config with its strategy and tiers; ``active`` marks the one in use."""
    return _json({"routes": request.app[BROKER].routes()})


async def use_route(request: web.Request) -> web.Response:
    """Switch the active routing config at once, and remember it across restarts.

    The name comes as JSON ``{"name": …}`` or as ``?name=`` (what the CLI sends).
    """
    name = request.query.get("name", "")
    if request.can_read_body:
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json({"error": 'expected a JSON body {"name": …}'}, 400)
        name = str(data.get("name", "")) if isinstance(data, dict) else ""
    broker = request.app[BROKER]
    try:
        save_active_route(request.app[STORE], request.app[SETTINGS], name)
        broker.use_route(name)
    except ProxyError as exc:
        return _json({"error": exc.message}, 404)
    return _json({"route": broker.route_label()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/api/status", _guard(status))
    app.router.add_get("/admin/api/routes", _guard(routes))
    app.router.add_post("/admin/api/route", _guard(use_route))
    app.router.add_post("/admin/api/accounts/{ref}/reset", _guard(reset))
