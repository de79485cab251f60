"""Admin API for usage history and the request log, behind the admin token (server/admin.py).

    GET /admin/api/usage?since=7d&by=model        usage_report (server/usage_report.py)
    GET /admin/api/requests?limit=&before=&account=&status=
                                                  requests_page: newest first, paged by
                                                  ``before`` = the ``next_before`` of a page

The handlers commit the store's queue first, so a request answered a moment ago is listed;
store reads and that commit run off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from proxygate.errors import ClientError, ProxyError
from proxygate.server.admin import guard
from proxygate.server.guard import render_for_path
from proxygate.server.keys import BROKER, POOL, STORE
from proxygate.server.usage_report import requests_page, usage_report
from proxygate.store.base import Store


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


async def _committed(store: Store) -> None:
    await asyncio.to_thread(store.flush)


async def usage(request: web.Request) -> web.Response:
    app, query = request.app, request.query
    store = app[STORE]
    try:
        await _committed(store)
        report = await asyncio.to_thread(
            usage_report,
            store,
            app[POOL][0].accounts,
            since=query.get("since", ""),
            by=query.get("by", "day"),
            now=app[BROKER].clock(),
        )
    except ProxyError as exc:  # a bad parameter (400), or the store failing to read
        return render_for_path(request, exc)
    report["cache_lost"] = app[BROKER].cache.lost_summary()  # kept across restarts (CACHE_LOST)
    return _json(report)


async def requests(request: web.Request) -> web.Response:
    query = request.query
    store = request.app[STORE]
    try:
        limit = _int(query.get("limit", "50"), "limit")
        await _committed(store)
        page = await asyncio.to_thread(
            requests_page,
            store,
            limit=limit,
            before=query.get("before", ""),
            account=query.get("account", ""),
            status=query.get("status", ""),
        )
    except ProxyError as exc:  # a bad parameter (400), or the store failing to read
        return render_for_path(request, exc)
    return _json(page)


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ClientError(f"{name}: {text!r} is not a whole number") from None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/api/usage", guard(usage))
    app.router.add_get("/admin/api/requests", guard(requests))
