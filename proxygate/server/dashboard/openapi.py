"""``GET /admin/api/openapi.json``: the OpenAPI 3.1 document of every ``/admin/api`` route.

A test compares this document with the app's router, so a route added without a line here
fails the suite. Every operation needs the admin token (``Authorization: Bearer``) or a
dashboard session cookie, plus ``X-CSRF-Token`` for a POST made with the cookie.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from proxygate import __version__
from proxygate.server import tenants_api
from proxygate.server.admin import guard

REF = {
    "name": "ref",
    "in": "path",
    "required": True,
    "description": "Account id or email.",
    "schema": {"type": "string"},
}

LOGIN_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The login's id.",
    "schema": {"type": "string"},
}


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


# (method, path, summary, parameters, has a JSON body)
OPERATIONS: tuple[tuple[str, str, str, list[dict[str, Any]], bool], ...] = (
    (
        "get",
        "/admin/api/status",
        "Every account's health, windows, leases, pins and today's usage; invalid files.",
        [],
        False,
    ),
    (
        "get",
        "/admin/api/routes",
        "Every routing config with its strategy and tiers; `active` marks the one in use.",
        [],
        False,
    ),
    ("post", "/admin/api/route", 'Switch the active routing config: `{"name": …}`.', [], True),
    (
        "post",
        "/admin/api/accounts",
        "Add an API key account (provider, api_key, id, base_url, models, formats, weight, priority); the key is never returned.",
        [],
        True,
    ),
    (
        "post",
        "/admin/api/accounts/{ref}/reset",
        "Clear the account's cooldown and error state.",
        [REF],
        False,
    ),
    (
        "post",
        "/admin/api/accounts/{ref}/enable",
        'Write `"disabled": false` to the account file; routing uses it at once.',
        [REF],
        False,
    ),
    (
        "post",
        "/admin/api/accounts/{ref}/disable",
        'Write `"disabled": true` to the account file; routing stops using it at once.',
        [REF],
        False,
    ),
    (
        "post",
        "/admin/api/accounts/{ref}/check",
        "One minimal live call through the account: status, latency, what the provider said.",
        [REF],
        False,
    ),
    ("post", "/admin/api/accounts/{ref}/delete", "Remove the account's file from the pool.", [REF], False),
    (
        "get",
        "/admin/api/usage",
        "Usage of a period grouped by one dimension, with totals, a daily series and cost.",
        [
            _query("since", "today (default), 7d, 24h or a date"),
            _query("by", "day, hour, account, model, route, format or tenant"),
        ],
        False,
    ),
    (
        "get",
        "/admin/api/requests",
        "The request log, newest first (never bodies).",
        [
            _query("limit", "1-1000, default 50"),
            _query("before", "the next_before of the previous page"),
            _query("account", "an account id"),
            _query("status", "a status code, ok or error"),
        ],
        False,
    ),
    (
        "get",
        "/admin/api/traffic/stream",
        "Live feed of finished requests as server-sent events (text/event-stream), one JSON object per event.",
        [],
        False,
    ),
    (
        "get",
        "/admin/api/config",
        "The routing settings as they apply: configs, tiers, aliases, budgets, and the config file.",
        [],
        False,
    ),
    (
        "post",
        "/admin/api/config/routing",
        'Edit config.toml: [routing] `active`, `aliases` and [budgets.<account>] ({"active": …, "aliases": {…}, '
        '"budgets": {"<account>": {"daily_usd": …}}}): comments kept, '
        "validated before writing, the old file kept as config.toml.bak, applied at once.",
        [],
        True,
    ),
    (
        "post",
        "/admin/api/logins",
        'Start a subscription login: `{"provider": "chatgpt" | "claude", "email"?}` → its id and the sign-in URL '
        "(ChatGPT: the server waits on the loopback callback port; Claude: paste the code shown).",
        [],
        True,
    ),
    (
        "get",
        "/admin/api/logins/{id}",
        "A login's state: waiting, done (with the account id) or failed (with why).",
        [LOGIN_ID],
        False,
    ),
    (
        "post",
        "/admin/api/logins/{id}/code",
        'Finish a login with what the browser showed: `{"code": "code#state" | the redirect address}`.',
        [LOGIN_ID],
        True,
    ),
    (
        "post",
        "/admin/api/dashboard/login-link",
        "A one-time login path for the dashboard (what `proxygate dashboard` opens).",
        [],
        False,
    ),
    ("get", "/admin/api/openapi.json", "This document.", [], False),
)


def _other_modules() -> list[tuple[str, str, str, list[dict[str, Any]], bool]]:
    """Routes other modules document beside their handlers (a ``ROUTES`` dict: path → method → summary)."""
    found = []
    for routes in (tenants_api.ROUTES,):
        for path, methods in routes.items():
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"{(\w+)}", path)
            ]
            for method, summary in methods.items():
                found.append((method, path, summary, parameters, method in ("post", "patch", "put")))
    return found


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, parameters, has_body in (*OPERATIONS, *_other_modules()):
        operation: dict[str, Any] = {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "401": {"description": "No admin token and no dashboard session."},
                "403": {"description": "A foreign Host or Origin, or a session call without its CSRF token."},
            },
        }
        if has_body:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "proxygate admin API", "version": __version__},
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "admin_token, or <data_dir>/admin.token",
                },
                "session": {"type": "apiKey", "in": "cookie", "name": "proxygate_session"},
            }
        },
        "security": [{"token": []}, {"session": []}],
        "paths": paths,
    }


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(openapi_document()), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/api/openapi.json", guard(openapi))
