"""Admin API for tenants (issue 14), behind the admin token (server/admin.py ``guard``).

    GET    /admin/api/tenants                    every tenant (the owner ``-`` first) with its
                                                 limits, usage today / this month and share
    POST   /admin/api/tenants                    {"name", rpm?, tpm?, …} → {"tenant", "key"}
    GET    /admin/api/tenants/{name}             one tenant
    PATCH  /admin/api/tenants/{name}             {rpm?, …, route?, models?, aliases?, share?,
                                                  guardrails?, capture?}  (true/false/"inherit")
    POST   /admin/api/tenants/{name}/rotate-key  a new key; the old one stops working at once
    DELETE /admin/api/tenants/{name}

A key is in the answer of ``POST`` and ``rotate-key`` only, and nowhere else, ever. Every write
goes to the store, is committed, and then swaps the server's tenant set, so it applies to the
next request (a guardrails or capture switch turned on whose stage this server started without:
at its next start, listed in the tenant's ``applies_at_next_start``). The server also polls the store's ``tenants_version`` once a second
(``tenant_book``): a tenant written by the CLI beside a running server applies as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiohttp import web

from proxygate.errors import ClientError, ProxyError
from proxygate.features.tenants import (
    OWNER,
    TenantBook,
    changed,
    created,
    delete_tenant,
    load_tenants,
    rotated,
    save_tenant,
    stored_version,
)
from proxygate.server.admin import guard
from proxygate.server.connections import read_body
from proxygate.server.guard import render_for_path
from proxygate.server.keys import SETTINGS, STORE, TENANT_BOOK
from proxygate.server.tasks import supervise
from proxygate.server.tenant_report import tenants_report
from proxygate.store.base import Store

POLL_S = 1.0
"How often the server looks for tenant writes made by another process (one small key read)."

ROUTES = {
    "/admin/api/tenants": {
        "get": "Every tenant (the owner as '-') with limits, usage today and this month, share.",
        "post": "Add a tenant: {name, rpm?, tpm?, concurrency?, daily_tokens?, monthly_tokens?, "
        "daily_usd?, monthly_usd?, route?, models?, aliases?, share?, guardrails?, capture?} → {tenant, key}; "
        'the key is shown once. guardrails and capture: true, false or "inherit" (the global setting); '
        "one turned on whose stage the server started without applies at its next start "
        "(tenant.applies_at_next_start).",
    },
    "/admin/api/tenants/{name}": {
        "get": "One tenant's limits, usage and share.",
        "patch": "Change a tenant's limits or settings (the fields of POST but name).",
        "delete": "Remove a tenant; its key stops working at once.",
    },
    "/admin/api/tenants/{name}/rotate-key": {
        "post": "A new key for the tenant (shown once); the old one stops working at once.",
    },
}
"The routes and what they do, for the admin API's OpenAPI document."


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def tenant_book(clock: Callable[[], float]) -> Callable[[web.Application], AsyncIterator[None]]:
    """Cleanup context: the app's ``TenantBook``, loaded and restored from the store, kept current."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings, store = app[SETTINGS], app[STORE]
        book = TenantBook(settings, clock=clock)
        await asyncio.to_thread(_reload, book, store)
        await asyncio.to_thread(book.restore, store)
        app[TENANT_BOOK] = book
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(supervise("tenant poll", lambda: _poll(book, store, stop), stop=stop))
            try:
                yield
            finally:
                stop.set()

    return ctx


def _reload(book: TenantBook, store: Store) -> None:
    version = stored_version(store)
    book.replace_all(load_tenants(store), version)


async def _poll(book: TenantBook, store: Store, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_S)
        if not stop.is_set() and await asyncio.to_thread(stored_version, store) != book.version:
            await asyncio.to_thread(_reload, book, store)


async def _write(app: web.Application, change: Callable[[], None]) -> None:
    """Queue a store write, commit it, and swap in the stored set (so the next request sees it)."""
    store = app[STORE]
    change()
    await asyncio.to_thread(store.flush)
    await asyncio.to_thread(_reload, app[TENANT_BOOK], store)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await read_body(request, request.app[SETTINGS]))
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ClientError("the body must be a JSON object")
    return data


def _found(book: TenantBook, name: str) -> str:
    if name in ("-", OWNER):
        return OWNER
    if name not in book.tenants:
        raise ProxyError(f"no tenant {name!r}", status=404, error_class="not_found")
    return name


def _stored_tenant(request: web.Request, *, owner_refusal: str) -> str:
    """The stored tenant the path names; the owner is refused with ``owner_refusal`` (it has no record)."""
    name = _found(request.app[TENANT_BOOK], request.match_info["name"])
    if name == OWNER:
        raise ClientError(owner_refusal)
    return name


async def list_tenants(request: web.Request) -> web.Response:
    return _json({"tenants": tenants_report(request.app), "owner_needs_token": _owner_locked_out(request)})


async def add_tenant(request: web.Request) -> web.Response:
    app = request.app
    book = app[TENANT_BOOK]
    try:
        data = await _body(request)
        name = data.pop("name", None)
        if not isinstance(name, str):
            raise ClientError('"name" is required (a string)')
        if name in book.tenants:
            raise ProxyError(
                f"tenant {name!r} exists (change it with PATCH)", status=409, error_class="conflict"
            )
        tenant, key = created(name, data, now=time.time(), routes=app[SETTINGS].routing.configs)
        await _write(app, lambda: save_tenant(app[STORE], tenant))
    except ProxyError as exc:
        return render_for_path(request, exc)
    return _json(
        {"tenant": book.report(tenant.name), "key": key, "owner_needs_token": _owner_locked_out(request)},
        status=201,
    )


async def show_tenant(request: web.Request) -> web.Response:
    book = request.app[TENANT_BOOK]
    try:
        name = _found(book, request.match_info["name"])
    except ProxyError as exc:
        return render_for_path(request, exc)
    return _json({"tenant": book.report(name)})


async def set_tenant(request: web.Request) -> web.Response:
    app = request.app
    book = app[TENANT_BOOK]
    try:
        name = _stored_tenant(
            request,
            owner_refusal="the owner has no limits; its share is [tenants] owner_share in config.toml",
        )
        tenant = changed(book.tenants[name], await _body(request), routes=app[SETTINGS].routing.configs)
        await _write(app, lambda: save_tenant(app[STORE], tenant))
    except ProxyError as exc:
        return render_for_path(request, exc)
    return _json({"tenant": book.report(name)})


async def rotate_key(request: web.Request) -> web.Response:
    app = request.app
    book = app[TENANT_BOOK]
    try:
        name = _stored_tenant(request, owner_refusal="the owner's credential is proxy_token in config.toml")
        tenant, key = rotated(book.tenants[name])
        await _write(app, lambda: save_tenant(app[STORE], tenant))
    except ProxyError as exc:
        return render_for_path(request, exc)
    return _json({"tenant": book.report(name), "key": key})


async def remove_tenant(request: web.Request) -> web.Response:
    app = request.app
    try:
        name = _stored_tenant(request, owner_refusal="the owner cannot be removed")
        await _write(app, lambda: delete_tenant(app[STORE], name))
    except ProxyError as exc:
        return render_for_path(request, exc)
    return _json({"removed": name})


def _owner_locked_out(request: web.Request) -> bool:
    """Tenants exist and no proxy_token is set: keyless owner access has ended."""
    return bool(request.app[TENANT_BOOK].tenants) and not request.app[SETTINGS].proxy_token


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/api/tenants", guard(list_tenants))
    app.router.add_post("/admin/api/tenants", guard(add_tenant))
    app.router.add_get("/admin/api/tenants/{name}", guard(show_tenant))
    app.router.add_patch("/admin/api/tenants/{name}", guard(set_tenant))
    app.router.add_delete("/admin/api/tenants/{name}", guard(remove_tenant))
    app.router.add_post("/admin/api/tenants/{name}/rotate-key", guard(rotate_key))


__all__ = ["ROUTES", "add_routes", "tenant_book"]
