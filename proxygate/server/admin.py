"""The admin API under /admin/api: what `proxygate status`, `reset` and `route use` talk to.

Always behind a token, loopback included (a web page can reach loopback; server/guard.py):
``admin_token`` when set, else one the server generates on first start into
``<data_dir>/admin.token`` (mode 0600, the token alone on one line, reused on later starts;
the CLI reads it from there). It is accepted as ``Authorization: Bearer`` or
``X-ProxyGate-Admin-Token``; a call carrying it in a header may use any content type (curl,
the CLI). The dashboard's calls carry its session cookie instead (server/dashboard/sessions.py),
and a state-changing one must also carry the session's CSRF token in ``X-CSRF-Token``: a page
can forge a cookie-carrying POST, not that header.

Other modules register their admin routes wrapped in ``guard`` (``_guard`` is the same).
Account entries carry ids and masked credentials, never secrets.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from proxygate.broker import Broker
from proxygate.config import Settings
from proxygate.errors import ClientError, PoolError, ProxyError, Unauthorized
from proxygate.pool.files import PoolSnapshot
from proxygate.server.broker_state import save_active_route
from proxygate.server.connections import read_body
from proxygate.server.dashboard.sessions import CSRF_HEADER, SAFE_METHODS, session_of
from proxygate.server.guard import log_rejection, render_for_path
from proxygate.server.keys import BROKER, POOL, SETTINGS, STORE, TENANT_BOOK
from proxygate.server.tenant_report import tenants_report
from proxygate.store import Store, StoreUnavailable, UsageRow, today
from proxygate.store.files import write_bytes_atomic

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ADMIN_TOKEN = web.AppKey("admin_token", str)
"The token the admin API accepts: ``admin_token``, or the generated one in ``admin.token``."
ADMIN_TOKEN_FILE = "admin.token"
"In the data dir; the CLI reads the same file when ``admin_token`` is unset."


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def guard(handler: Handler) -> Handler:
    """``handler`` served only to a caller presenting the admin token or a dashboard session
    (401 JSON otherwise); a session's state-changing call also needs its CSRF token (403)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if hmac.compare_digest(presented_admin_token(request).encode(), request.app[ADMIN_TOKEN].encode()):
            return await handler(request)
        session = session_of(request)
        if session is not None:
            if request.method not in SAFE_METHODS and not session.accepts_csrf(
                request.headers.get(CSRF_HEADER, "")
            ):
                log_rejection(request, 403, "dashboard call without its CSRF token")
                error = ClientError("missing or wrong CSRF token", status=403, error_class="permission")
                return render_for_path(request, error)
            return await handler(request)
        error = Unauthorized(
            "missing or wrong admin token (send it as Authorization: Bearer or "
            f"X-ProxyGate-Admin-Token; unless admin_token is set it is in <data_dir>/{ADMIN_TOKEN_FILE})"
        )
        log_rejection(request, 401, "missing or wrong admin token")
        return render_for_path(request, error)

    return guarded


_guard = guard


def presented_admin_token(request: web.Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-proxygate-admin-token", "").strip()


def admin_token_path(settings: Settings) -> Path:
    return settings.data_dir / ADMIN_TOKEN_FILE


def load_or_create_admin_token(settings: Settings) -> str:
    """``admin_token``, else the token in ``<data_dir>/admin.token``, made (0600, atomic) if missing."""
    if settings.admin_token:
        return settings.admin_token
    path = admin_token_path(settings)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ProxyError(f"cannot read the admin token {path}: {exc.__class__.__name__}") from None
    if token and token.isprintable() and " " not in token:
        path.chmod(0o600)
        return token
    token = secrets.token_urlsafe(32)
    write_bytes_atomic(path, token.encode() + b"\n")
    return token


async def _load_admin_token(app: web.Application) -> None:
    """The admin token; unless configured, the one all instances on a shared store agreed on.

    The agreed token goes into ``admin.token`` too, so the CLI and the dashboard login of any
    instance use the same one (dashboard sessions are signed with a key derived from it).
    """
    settings = app[SETTINGS]
    token = await asyncio.to_thread(load_or_create_admin_token, settings)
    if not settings.admin_token:
        agreed = await app[STORE].agree("admin_token", token)
        if agreed != token and agreed.isprintable() and " " not in agreed and len(agreed) <= 256:
            await asyncio.to_thread(write_bytes_atomic, admin_token_path(settings), agreed.encode() + b"\n")
            token = agreed
    app[ADMIN_TOKEN] = token


def today_usage(store: Store) -> list[UsageRow] | None:
    """Today's usage rows; None when the shared store cannot answer now. Blocking: call it off the loop."""
    try:
        return store.usage(today())
    except StoreUnavailable:
        return None


def status_report(
    settings: Settings, broker: Broker, snapshot: PoolSnapshot, store: Store, rows: list[UsageRow] | None
) -> dict[str, Any]:
    """Every account's health and today's usage (``rows``, from ``today_usage``), plus files that failed to load.

    The same report for a running server (live in-flight counts) and for `proxygate status`
    with no server (the broker restored from the store). With the usage unknown (``rows``
    None: the shared store is unreachable) each account's ``today`` is None, never a made-up
    0, and ``store.degraded`` says why.
    """
    usage: dict[str, dict[str, int]] = {}
    for row in rows or ():
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
                "plan": account.plan,
                "today": None
                if rows is None
                else usage.get(account.id, {"requests": 0, "tokens": 0, "errors": 0}),
                "inflight": broker.state(account.id).inflight,
            }
            for account in snapshot.accounts
        ],
        "invalid_files": [{"path": str(f.path), "reason": f.reason} for f in snapshot.invalid],
        "cache": broker.cache.report(),  # prompt-cache hit rates and conversations moved off their cache
        # degraded: why the shared store is unreachable ("" when it is fine); the server then serves
        # from its last mirror of the shared state and resynchronises when the store is back
        "store": {"backend": settings.store.backend, "degraded": store.degraded},
    }


async def status(request: web.Request) -> web.Response:
    app = request.app
    rows = await asyncio.to_thread(today_usage, app[STORE])  # a network read with a shared store
    report = status_report(app[SETTINGS], app[BROKER], app[POOL][0], app[STORE], rows)
    if app[TENANT_BOOK].tenants:  # who uses the subscriptions, and how much of each window
        report["tenants"] = tenants_report(app)
    return _json(report)


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
    """Switch the active routing config at once, and remember it across restarts: ``{"name": …}``."""
    try:
        data = orjson.loads(await read_body(request, request.app[SETTINGS]))
    except orjson.JSONDecodeError:
        data = None
    except ProxyError as exc:  # too large, or stalled past the body deadline
        return render_for_path(request, exc)
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str):
        return _json({"error": 'expected a JSON body {"name": …}'}, 400)
    broker = request.app[BROKER]
    try:
        save_active_route(request.app[STORE], request.app[SETTINGS], name)
        broker.use_route(name)
    except ProxyError as exc:
        return _json({"error": exc.message}, 404)
    return _json({"route": broker.route_label()})


def add_routes(app: web.Application) -> None:
    app.on_startup.append(_load_admin_token)
    app.router.add_get("/admin/api/status", guard(status))
    app.router.add_get("/admin/api/routes", guard(routes))
    app.router.add_post("/admin/api/route", guard(use_route))
    app.router.add_post("/admin/api/accounts/{ref}/reset", guard(reset))
