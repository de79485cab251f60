"""Admin API calls the dashboard's pages make (the CLI makes the same ones where it can).

    POST /admin/api/accounts                    add an API key (the key is never returned)
    POST /admin/api/accounts/{ref}/enable       ``"disabled": false`` in its file, applied at once
    POST /admin/api/accounts/{ref}/disable      ``"disabled": true`` in its file, applied at once
    POST /admin/api/accounts/{ref}/check        one live minimal call through the account
    POST /admin/api/accounts/{ref}/delete       remove its file from the pool
    POST /admin/api/dashboard/login-link        a one-time login path (``proxygate dashboard``)

Pool files change through pool/files.py (atomic, 0600). After a change the pool is reloaded
here rather than waiting for the watcher, so routing follows the file before the call answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from proxygate.errors import ClientError, PoolError, ProxyError
from proxygate.pool.catalog import API_KEY_PROVIDERS, PROVIDERS
from proxygate.pool.files import add_account_file, load_pool, new_account_path, set_enabled
from proxygate.pool.records import Account, InvalidAccount, mask
from proxygate.providers.check import check_account
from proxygate.server.admin import guard
from proxygate.server.connections import read_body
from proxygate.server.dashboard.sessions import SESSIONS
from proxygate.server.guard import render_for_path
from proxygate.server.keys import BROKER, POOL, SETTINGS
from proxygate.store.secrets import Vault

FORMATS = ("anthropic", "chat", "responses", "gemini")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def reload_pool(app: web.Application) -> None:
    """Read the pool dir now and route by it at once (the watcher would, a moment later)."""
    snapshot = await asyncio.to_thread(load_pool, app[SETTINGS].pool_dir, Vault.of(app[SETTINGS]))
    app[POOL][0] = snapshot
    app[BROKER].update_pool(snapshot)


def _account(request: web.Request) -> Account:
    return request.app[POOL][0].find(request.match_info["ref"])


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; ``ClientError`` for anything else."""
    raw = await read_body(request, request.app[SETTINGS])
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise ClientError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ClientError("expected a JSON object")
    return data


async def _set_enabled(request: web.Request, *, enabled: bool) -> web.Response:
    try:
        account = _account(request)
        settings = request.app[SETTINGS]
        await asyncio.to_thread(
            set_enabled, settings.pool_dir, account.id, enabled=enabled, vault=Vault.of(settings)
        )
        await reload_pool(request.app)
    except PoolError as exc:
        return _json({"error": exc.message}, 404)
    return _json({"id": account.id, "enabled": enabled})


async def enable(request: web.Request) -> web.Response:
    return await _set_enabled(request, enabled=True)


async def disable(request: web.Request) -> web.Response:
    return await _set_enabled(request, enabled=False)


async def delete(request: web.Request) -> web.Response:
    try:
        account = _account(request)
    except PoolError as exc:
        return _json({"error": exc.message}, 404)
    if account.path is None:
        return _json({"error": f"account {account.id!r} has no file"}, 409)
    try:
        await asyncio.to_thread(account.path.unlink)
    except FileNotFoundError:
        pass  # already gone: the reload below says so
    except OSError as exc:
        return _json({"error": f"cannot remove {account.path}: {exc.strerror}"}, 500)
    await reload_pool(request.app)
    return _json({"deleted": account.id, "path": str(account.path)})


async def check(request: web.Request) -> web.Response:
    """One minimal live call through the account, as `proxygate check` makes."""
    try:
        account = _account(request)
    except PoolError as exc:
        return _json({"error": exc.message}, 404)
    literal = [m for m in account.models if not set("*?[") & set(m)]
    model = literal[0] if literal else PROVIDERS[account.provider].check_model
    if not model:
        return _json({"error": f"{account.id}: no model to check with"}, 400)
    result = await check_account(account, model, request.app[SETTINGS].timeouts)
    return _json(
        {
            "id": account.id,
            "model": model,
            "status": result.status,
            "latency_ms": round(result.latency_ms),
            "said": result.said,
        }
    )


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ClientError(f"{key}: expected a string")
    return value.strip()


def _list(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key) or []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ClientError(f"{key}: expected a list of strings or a comma-separated string")
    return [v.strip() for v in value if v.strip()]


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ClientError(f"{key}: {value!r} is not a number") from None


def api_key_entry(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(file name, pool file contents) of an add-key request, as `proxygate add-key` builds them."""
    provider, key, account_id = _text(data, "provider"), _text(data, "api_key"), _text(data, "id")
    if provider not in API_KEY_PROVIDERS:
        raise ClientError(f"provider: {provider!r} is not one of {', '.join(API_KEY_PROVIDERS)}")
    if not key:
        raise ClientError("api_key: no API key given")
    entry: dict[str, Any] = {"provider": provider, "api_key": key}
    if account_id:
        entry["id"] = account_id
    if base_url := _text(data, "base_url"):
        entry["base_url"] = base_url
    if models := _list(data, "models"):
        entry["models"] = models
    if formats := _list(data, "formats"):
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise ClientError(f"formats: {', '.join(unknown)} not among {', '.join(FORMATS)}")
        entry["formats"] = formats
    if (priority := _number(data, "priority")) is not None:
        entry["priority"] = int(priority)
    if (weight := _number(data, "weight")) is not None:
        entry["weight"] = weight
    return account_id or provider, entry


async def add_api_key(request: web.Request) -> web.Response:
    """Write a new API-key account file (0600); the answer names it, the key only masked."""
    try:
        name, entry = api_key_entry(await json_body(request))
    except ProxyError as exc:
        return render_for_path(request, exc)
    pool_dir = request.app[SETTINGS].pool_dir
    if await asyncio.to_thread(new_account_path(pool_dir, "apikey", name).exists):
        return _json({"error": f"an account named {name!r} exists: choose another id"}, 409)
    try:
        vault = Vault.of(request.app[SETTINGS])  # sealed when [secrets] encrypt is on
        path = await asyncio.to_thread(add_account_file, pool_dir, "apikey", name, entry, vault=vault)
    except (InvalidAccount, PoolError) as exc:
        return _json({"error": f"not added: {exc}"}, 400)
    await reload_pool(request.app)
    return _json({"id": path.stem, "path": str(path), "key": mask(entry["api_key"])}, 201)


async def login_link(request: web.Request) -> web.Response:
    """A path that logs a browser in once (``proxygate dashboard``); only for the token holder."""
    code = request.app[SESSIONS].new_login_code()
    return _json({"path": f"/login?code={code}"})


async def config(request: web.Request) -> web.Response:
    """Routing as it applies now: the active config, every config's tiers, aliases, budgets."""
    settings, broker = request.app[SETTINGS], request.app[BROKER]
    return _json(
        {
            "config_path": str(settings.config_path) if settings.config_path else None,
            "route": broker.route_label(),
            "priority": broker.settings.priority,
            "routes": broker.routes(),
            "aliases": dict(broker.settings.aliases),  # as edited live (config_edit.py)
            "budgets": {
                account_id: {
                    "daily_tokens": b.daily_tokens,
                    "monthly_tokens": b.monthly_tokens,
                    "daily_usd": b.daily_usd,
                    "monthly_usd": b.monthly_usd,
                }
                for account_id, b in broker.budgets.budgets.items()  # as edited live (config_edit.py)
            },
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/api/config", guard(config))
    app.router.add_post("/admin/api/accounts", guard(add_api_key))
    app.router.add_post("/admin/api/accounts/{ref}/enable", guard(enable))
    app.router.add_post("/admin/api/accounts/{ref}/disable", guard(disable))
    app.router.add_post("/admin/api/accounts/{ref}/check", guard(check))
    app.router.add_post("/admin/api/accounts/{ref}/delete", guard(delete))
    app.router.add_post("/admin/api/dashboard/login-link", guard(login_link))
