"""Subscription logins started from the dashboard, with the CLI's flows (auth/pkce.py, auth/tokens.py).

    POST /admin/api/logins               {"provider": "chatgpt" | "claude", "email"?} → the sign-in URL
    GET  /admin/api/logins/{id}          waiting | done (with the account id) | failed (with why)
    POST /admin/api/logins/{id}/code     {"code": …, "email"?}: the pasted code or redirect address

ChatGPT (PKCE): the server listens on the loopback callback port the Codex client registered
(``[oauth.openai] callback_port``, 1455), exactly as `proxygate add-account` does, so the browser
that signs in must run on this machine; from elsewhere the page takes the address the browser
ended on instead (as ``--code``). Claude: its sign-in page shows ``code#state``, which the user
pastes into the page (as `add-claude-account --login`). Either way the tokens are traded here,
the account file written (0600, sealed when [secrets] encrypt is on) and the pool reloaded, so
the account is on the Pool page when the login says done. Codes and tokens never leave the server.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
from aiohttp import web

from proxygate.auth.credentials import chatgpt_file_name, chatgpt_login_entry, claude_login_entry
from proxygate.auth.pkce import (
    PKCE,
    claude_authorize_url,
    new_pkce,
    openai_authorize_url,
    openai_redirect_uri,
    parse_pasted,
    wait_for_callback,
)
from proxygate.auth.tokens import exchange_code
from proxygate.errors import ClientError, ProxyError
from proxygate.pool.files import add_account_file
from proxygate.pool.records import InvalidAccount
from proxygate.server.admin import guard
from proxygate.server.dashboard.api import json_body, reload_pool
from proxygate.server.guard import render_for_path
from proxygate.server.keys import BROKER, SETTINGS
from proxygate.store.secrets import Vault

log = logging.getLogger("proxygate")

Provider = Literal["chatgpt", "claude"]
LOGIN_TTL_S = 900.0
"A login not finished in this time is forgotten (its callback listener stops too)."
MAX_LOGINS = 20


@dataclass(slots=True)
class Login:
    id: str
    provider: Provider
    pkce: PKCE
    url: str
    email: str = ""
    status: Literal["waiting", "done", "failed"] = "waiting"
    message: str = ""
    account_id: str = ""
    created_at: float = field(default_factory=time.monotonic)
    callback: asyncio.Task[None] | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "status": self.status,
            "message": self.message,
            "account_id": self.account_id,
            "needs_paste": self.provider == "claude",
        }


class Logins:
    def __init__(self) -> None:
        self.pending: dict[str, Login] = {}
        self.tasks: asyncio.TaskGroup | None = None

    def forget_old(self) -> None:
        now = time.monotonic()
        for login in [x for x in self.pending.values() if now - x.created_at > LOGIN_TTL_S]:
            if login.callback is not None:
                login.callback.cancel()
            del self.pending[login.id]


LOGINS = web.AppKey("dashboard_logins", Logins)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _login_tasks(app: web.Application) -> AsyncIterator[None]:
    """Owns the callback listeners: each ends with its login, or here at shutdown."""
    logins = app[LOGINS]
    async with asyncio.TaskGroup() as tasks:
        logins.tasks = tasks
        yield
        logins.tasks = None
        for login in logins.pending.values():
            if login.callback is not None:
                login.callback.cancel()


async def _finish(app: web.Application, login: Login, code: str) -> None:
    """Trade the code for tokens, write the account file, route by it at once."""
    settings = app[SETTINGS]
    vault = Vault.of(settings)
    async with aiohttp.ClientSession() as session:
        if login.provider == "chatgpt":
            tokens, _ = await exchange_code(
                session,
                "chatgpt",
                settings.oauth,
                code=code,
                verifier=login.pkce.verifier,
                redirect_uri=openai_redirect_uri(settings.oauth.openai),
            )
            entry = chatgpt_login_entry(tokens, time.time())
            name = await asyncio.to_thread(
                chatgpt_file_name, settings.pool_dir, entry["email"], entry["account_id"], vault
            )
        else:
            tokens, body = await exchange_code(
                session,
                "claude",
                settings.oauth,
                code=code,
                verifier=login.pkce.verifier,
                redirect_uri=settings.oauth.claude.redirect_uri,
                state=login.pkce.state,
            )
            entry = claude_login_entry(tokens, body, email=login.email, now=time.time())
            name = entry["email"]
    try:
        path = await asyncio.to_thread(
            add_account_file, settings.pool_dir, login.provider, name, entry, replace=True, vault=vault
        )
    except InvalidAccount as exc:
        raise ClientError(f"not saved: {exc}") from None
    await reload_pool(app)
    app[BROKER].reset(path.stem)  # a new login heals "needs re-auth"
    login.status, login.account_id, login.message = "done", path.stem, f"added {path.stem}"


async def _await_callback(app: web.Application, login: Login) -> None:
    o = app[SETTINGS].oauth.openai
    try:
        code = await wait_for_callback(o.callback_port, login.pkce.state, timeout_s=LOGIN_TTL_S)
        await _finish(app, login, code)
    except ProxyError as exc:  # refused, timed out, or the port is taken: the page can still take a paste
        if login.status == "waiting":
            login.message = exc.message
            if not exc.message.startswith(("port", "no login callback")):
                login.status = "failed"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        login.status, login.message = (
            "failed",
            f"the token endpoint could not be reached: {type(exc).__name__}",
        )


async def start_login(request: web.Request) -> web.Response:
    logins = request.app[LOGINS]
    settings = request.app[SETTINGS]
    try:
        data = await json_body(request)
        provider = data.get("provider")
        email = data.get("email") or ""
        if provider not in ("chatgpt", "claude"):
            raise ClientError('provider: expected "chatgpt" or "claude"')
        if not isinstance(email, str):
            raise ClientError("email: expected a string")
    except ProxyError as exc:
        return render_for_path(request, exc)
    logins.forget_old()
    if len(logins.pending) >= MAX_LOGINS:
        return render_for_path(
            request, ClientError("too many logins in progress; finish or wait for one", status=429)
        )
    pkce = new_pkce()
    if provider == "chatgpt":
        url = openai_authorize_url(settings.oauth.openai, pkce)
    else:
        url = claude_authorize_url(settings.oauth.claude, pkce)
    login = Login(secrets.token_urlsafe(12), provider, pkce, url, email=email.strip())
    logins.pending[login.id] = login
    if provider == "chatgpt" and logins.tasks is not None:
        login.callback = logins.tasks.create_task(_await_callback(request.app, login))
    answer = {**login.view(), "url": url}
    if provider == "chatgpt":
        answer["message"] = (
            f"waiting for the browser on port {settings.oauth.openai.callback_port}; signing in on another "
            "device? paste the address its browser ends on"
        )
    return _json(answer, status=201)


def _find(request: web.Request) -> Login | None:
    return request.app[LOGINS].pending.get(request.match_info["id"])


async def login_status(request: web.Request) -> web.Response:
    login = _find(request)
    if login is None:
        return _json({"error": "no such login (finished long ago, or the server restarted)"}, status=404)
    return _json(login.view())


async def paste_code(request: web.Request) -> web.Response:
    login = _find(request)
    if login is None:
        return _json({"error": "no such login (finished long ago, or the server restarted)"}, status=404)
    try:
        data = await json_body(request)
        pasted = data.get("code")
        if not isinstance(pasted, str):
            raise ClientError("code: expected the pasted code or address")
        if login.status == "done":
            return _json(login.view())
        if isinstance(email := data.get("email"), str) and email.strip():
            login.email = email.strip()  # Claude's answer may not name the account
        code = parse_pasted(pasted, login.pkce.state)
        if login.callback is not None:
            login.callback.cancel()  # the paste won: stop listening
        await _finish(request.app, login, code)
    except ProxyError as exc:
        return render_for_path(request, exc)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        error = ProxyError(f"the token endpoint could not be reached: {type(exc).__name__}", status=502)
        return render_for_path(request, error)
    return _json(login.view())


def add_routes(app: web.Application) -> None:
    app[LOGINS] = Logins()
    app.cleanup_ctx.append(_login_tasks)
    app.router.add_post("/admin/api/logins", guard(start_login))
    app.router.add_get("/admin/api/logins/{id}", guard(login_status))
    app.router.add_post("/admin/api/logins/{id}/code", guard(paste_code))
