"""Subscription commands: add-account (ChatGPT/Codex login), add-claude-account, list-claude.

Thin: the flows live in ``proxygate/auth`` (PKCE, device code, credential files); this
module parses flags, prints what the user must do, and writes the pool file (0600, atomic)
that a running server picks up by itself. A new login also clears a "needs re-auth" mark.

The PKCE verifier of a browser login is kept in ``<pool>/.login-chatgpt.json`` (0600) so
``add-account --code URL`` can finish a login whose browser ran on another device.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import webbrowser
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import orjson
import typer
from rich.markup import escape
from rich.table import Table

from proxygate.auth.credentials import (
    chatgpt_file_name,
    chatgpt_login_entry,
    claude_entry,
    claude_login_entry,
    read_json,
)
from proxygate.auth.device import poll_device_grant, request_device_code
from proxygate.auth.pkce import (
    PKCE,
    LoginStillOpen,
    claude_authorize_url,
    new_pkce,
    openai_authorize_url,
    openai_redirect_uri,
    parse_pasted,
    wait_for_callback,
)
from proxygate.auth.tokens import TokenSet, exchange_code
from proxygate.cli.app import (
    ConfigOption,
    JsonOption,
    app,
    console,
    err_console,
    print_json,
    reported,
    settings_from,
)
from proxygate.config import Settings
from proxygate.errors import PoolError, ProxyError
from proxygate.pool.files import add_account_file, load_pool
from proxygate.pool.records import Account, InvalidAccount, Kind, mask
from proxygate.store.files import write_json_atomic
from proxygate.store.secrets import Vault

# A pending browser login older than this is refused: the authorization code lives minutes.
PENDING_LOGIN_TTL_S = 30 * 60.0

SHARED_TOKEN_WARNING = (
    "[yellow]note:[/] Claude Code and proxygate now share one single-use refresh token: whichever "
    "refreshes second is logged out. For an independent session run "
    "`proxygate add-claude-account --login`."
)

NoBrowserOption = Annotated[
    bool, typer.Option("--no-browser", help="Print the login URL instead of opening it.")
]


def _pending_path(settings: Settings) -> Path:
    return settings.pool_dir / ".login-chatgpt.json"


def save_account(settings: Settings, kind: Kind, name: str, entry: dict[str, Any]) -> Path:
    """Write the account file (replacing an older login of the same account) and clear re-auth."""
    try:
        path = add_account_file(settings.pool_dir, kind, name, entry, replace=True, vault=Vault.of(settings))
    except InvalidAccount as exc:
        raise PoolError(f"not saved: {exc}") from None
    clear_reauth(settings, path.stem)
    return path


def clear_reauth(settings: Settings, account_id: str) -> None:
    """A new login heals "needs re-auth": via a running server, else in the persisted state."""
    from proxygate.cli.accounts import admin_get
    from proxygate.store import COOLDOWNS
    from proxygate.store.open import open_store

    with contextlib.suppress(PoolError):
        if admin_get(settings, f"/admin/api/accounts/{account_id}/reset", method="POST") is not None:
            return
    if settings.store.backend == "lmdb" and not settings.data_dir.exists():
        return
    store = open_store(settings)
    try:
        store.put_state(COOLDOWNS, account_id, None)
    finally:
        store.close()


def _describe_login(entry: dict[str, Any], path: Path) -> str:
    plan = f", plan {entry['plan']}" if entry.get("plan") else ""
    workspace = f", account {mask(entry['account_id'])}" if entry.get("account_id") else ""
    return f"added [bold]{escape(entry['email'])}[/]{escape(plan + workspace)} → {escape(str(path))}"


# -- ChatGPT / Codex ----------------------------------------------------------------------------


async def _chatgpt_browser_login(settings: Settings, *, open_browser: bool) -> TokenSet:
    o = settings.oauth.openai
    pkce = new_pkce()
    write_json_atomic(
        _pending_path(settings), {"verifier": pkce.verifier, "state": pkce.state, "created_at": time.time()}
    )
    url = openai_authorize_url(o, pkce)
    console.print("Sign in to ChatGPT at:", highlight=False)
    console.print(url, highlight=False, markup=False, soft_wrap=True)
    if open_browser:
        webbrowser.open(url)
    console.print(
        f"Waiting for the browser on port {o.callback_port}… (browser on another device? copy the "
        "address it ends on and run `proxygate add-account --code -`)",
        highlight=False,
    )
    with _forgotten_if_failed(settings):
        code = await wait_for_callback(o.callback_port, pkce.state)
        return await _chatgpt_exchange(settings, code, pkce.verifier, openai_redirect_uri(o))


async def _chatgpt_exchange(settings: Settings, code: str, verifier: str, redirect_uri: str) -> TokenSet:
    async with aiohttp.ClientSession() as session:
        tokens, _ = await exchange_code(
            session, "chatgpt", settings.oauth, code=code, verifier=verifier, redirect_uri=redirect_uri
        )
    _pending_path(settings).unlink(missing_ok=True)
    return tokens


@contextlib.contextmanager
def _forgotten_if_failed(settings: Settings) -> Iterator[None]:
    """A failed login removes its pending file (the verifier is no use after a refusal).

    A paste that is not this login's answer, a busy callback port or a callback that never
    came keep it: the login may still be finished with ``--code``.
    """
    try:
        yield
    except LoginStillOpen:
        raise
    except ProxyError:
        _pending_path(settings).unlink(missing_ok=True)
        raise


def _pending_login(settings: Settings) -> PKCE:
    path = _pending_path(settings)
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        raise PoolError(
            "no login in progress: start one with `proxygate add-account --no-browser`, open the URL, "
            "then pass the address the browser ends on to --code"
        ) from None
    if time.time() - float(data.get("created_at", 0)) > PENDING_LOGIN_TTL_S:
        raise PoolError(
            "the login in progress is too old; start again with `proxygate add-account --no-browser`"
        )
    return PKCE(str(data["verifier"]), "", str(data["state"]))


async def _chatgpt_device_login(settings: Settings) -> TokenSet:
    o = settings.oauth.openai
    async with aiohttp.ClientSession() as session:
        device = await request_device_code(session, o)
        console.print(
            f"Open [bold]{escape(device.verify_url)}[/] on any device and enter the code "
            f"[bold]{escape(device.user_code)}[/]"
        )
        console.print("Waiting for approval…")
        grant = await poll_device_grant(session, o, device)
        tokens, _ = await exchange_code(
            session,
            "chatgpt",
            settings.oauth,
            code=grant.authorization_code,
            verifier=grant.code_verifier,
            redirect_uri=o.device_redirect_uri,
        )
    return tokens


@app.command("add-account")
def add_account(
    no_browser: NoBrowserOption = False,
    code: Annotated[
        str | None,
        typer.Option(
            "--code",
            help="Finish a login: the redirect URL (or code) from the browser; `-` asks for it "
            "(keeps it out of the process list and shell history).",
            metavar="URL|-",
        ),
    ] = None,
    device: Annotated[
        bool, typer.Option("--device", help="Log in with a device code (no browser here).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Log in to ChatGPT (Codex subscription) and add the account to the pool."""
    with reported():
        settings = settings_from(config)
        if code is not None:
            pending = _pending_login(settings)
            if code == "-":
                code = _read_pasted("Paste the address the browser ended on")
            with _forgotten_if_failed(settings):
                auth_code = parse_pasted(code, pending.state)
                redirect = openai_redirect_uri(settings.oauth.openai)
                tokens = asyncio.run(_chatgpt_exchange(settings, auth_code, pending.verifier, redirect))
        elif device:
            tokens = asyncio.run(_chatgpt_device_login(settings))
        else:
            tokens = asyncio.run(_chatgpt_browser_login(settings, open_browser=not no_browser))
        entry = chatgpt_login_entry(tokens, time.time())
        name = chatgpt_file_name(settings.pool_dir, entry["email"], entry["account_id"], Vault.of(settings))
        path = save_account(settings, "chatgpt", name, entry)
    console.print(_describe_login(entry, path), highlight=False)


def _read_pasted(prompt: str) -> str:
    """A pasted URL or code from the terminal or stdin, never from argv."""
    if sys.stdin.isatty():
        return str(typer.prompt(prompt))
    return sys.stdin.readline()


# -- Claude -------------------------------------------------------------------------------------


async def _claude_login(settings: Settings, pkce: PKCE, pasted: str, email: str) -> dict[str, Any]:
    c = settings.oauth.claude
    auth_code = parse_pasted(pasted, pkce.state)
    async with aiohttp.ClientSession() as session:
        tokens, body = await exchange_code(
            session,
            "claude",
            settings.oauth,
            code=auth_code,
            verifier=pkce.verifier,
            redirect_uri=c.redirect_uri,
            state=pkce.state,
        )
    return claude_login_entry(tokens, body, email=email, now=time.time())


@app.command("add-claude-account")
def add_claude_account(
    source: Annotated[
        Path | None,
        typer.Option("--from", help="Claude Code credentials (~/.claude/.credentials.json) to import."),
    ] = None,
    email: Annotated[str, typer.Option(help="The account's email (names the pool file).")] = "",
    login: Annotated[
        bool, typer.Option("--login", help="Log in to Claude here (an independent session).")
    ] = False,
    no_browser: NoBrowserOption = False,
    config: ConfigOption = None,
) -> None:
    """Add a Claude Pro/Max subscription: import Claude Code's credentials, or --login."""
    with reported():
        settings = settings_from(config)
        if login:
            pkce = new_pkce()
            url = claude_authorize_url(settings.oauth.claude, pkce)
            console.print("Sign in to Claude at:", highlight=False)
            console.print(url, highlight=False, markup=False, soft_wrap=True)
            if not no_browser:
                webbrowser.open(url)
            pasted = _read_pasted("Paste the code shown after signing in (code#state)")
            entry = asyncio.run(_claude_login(settings, pkce, pasted, email))
        elif source is not None:
            entry = claude_entry(read_json(source), email=email, source=source)
        else:
            raise PoolError(
                "say where the account comes from: --from ~/.claude/.credentials.json, or --login"
            )
        path = save_account(settings, "claude", entry["email"], entry)
    console.print(_describe_login(entry, path), highlight=False)
    if not login:
        console.print(SHARED_TOKEN_WARNING, highlight=False)


# -- listing ------------------------------------------------------------------------------------


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M")
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return (
                datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M")
            )
    return "-"


def quota_text(windows: Any) -> str:
    """``5h 80% · 7d 45%`` (fraction left per window) from a status entry's windows, if any."""
    items = windows.values() if isinstance(windows, dict) else windows if isinstance(windows, list) else []
    parts = []
    for w in items:
        if isinstance(w, dict) and w.get("kind", "quota") == "quota":
            # broker.describe's view gives left_pct; a raw Headroom JSON gives fraction_left.
            left = w.get("left_pct")
            if left is None and w.get("fraction_left") is not None:
                left = w["fraction_left"] * 100
            name = w.get("window", "?") + (f"@{w['model']}" if w.get("model") else "")
            parts.append(f"{name} {'?' if left is None else f'{left:.0f}%'}")
    return " · ".join(parts) or "-"


def subscription_columns(account: Account | None, status: dict[str, Any]) -> tuple[str, str, str, str]:
    """(plan, token expiry, last refresh, quota left) for `list`; "-" where not applicable."""
    if account is None or not account.is_oauth:
        return "-", "-", "-", quota_text(status.get("windows"))
    return (
        account.plan or "-",
        _when(account.expires_at),
        _when(account.raw.get("last_refresh")),
        quota_text(status.get("windows")),
    )


@app.command("list-claude")
def list_claude(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show the Claude subscription accounts: plan, token expiry, last refresh, state, quota."""
    from proxygate.cli.accounts import live_or_offline_status

    with reported():
        settings = settings_from(config)
        snapshot = load_pool(settings.pool_dir, Vault.of(settings))
        status = {a["id"]: a for a in live_or_offline_status(settings)["accounts"]}
    rows = []
    for account in (a for a in snapshot.accounts if a.kind == "claude"):
        entry = status.get(account.id, {})
        plan, expires, refreshed, quota = subscription_columns(account, entry)
        state = str(entry.get("state", "-")) + (f": {entry['reason']}" if entry.get("reason") else "")
        rows.append({"email": account.email, "plan": plan, "expires": expires, "last_refresh": refreshed,
                     "state": state, "quota": quota})  # fmt: skip
    if as_json:
        print_json(rows)
        return
    table = Table(
        "email", "plan", "token expires", "last refresh", "state", "quota left", title="Claude accounts"
    )
    for row in rows:
        table.add_row(*map(escape, row.values()))
    console.print(table)
    if not rows:
        err_console.print("no Claude accounts: add one with `proxygate add-claude-account --login`")
