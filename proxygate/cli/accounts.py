"""Pool commands: list, status, enable, disable, add-key, import, import-keys, check, reset."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from proxygate.auth.credentials import codex_entry, is_codex_auth, read_json
from proxygate.broker import Broker
from proxygate.cli import admin_client
from proxygate.cli.admin_client import RunningServer, find_server
from proxygate.cli.app import (
    AddrOption,
    ConfigOption,
    JsonOption,
    app,
    console,
    err_console,
    print_json,
    reported,
    settings_from,
)
from proxygate.cli.oauth import subscription_columns
from proxygate.cli.secrets import secrets_line
from proxygate.config import Settings
from proxygate.errors import PoolError
from proxygate.pool.catalog import API_KEY_PROVIDERS, PROVIDERS
from proxygate.pool.files import PoolSnapshot, add_account_file, load_pool, new_account_path, set_enabled
from proxygate.pool.importing import ImportReport, import_entries, read_entries
from proxygate.pool.records import InvalidAccount, mask
from proxygate.server.admin import status_report, today_usage
from proxygate.server.broker_state import restore_broker
from proxygate.store import COOLDOWNS, open_store
from proxygate.store.secrets import Vault

RefArgument = Annotated[
    str, typer.Argument(help="Account id or email (see `proxygate list`).", metavar="ACCOUNT")
]

# What a change made with no server running is: remembered, in effect at the next start.
NOT_RUNNING_NOTE = " (no server running; applies when the server starts)"

# `enable`/`disable` write the pool file; a running server's watcher applies it within ~50 ms.
LIVE_APPLY_WAIT_S = 3.0


def offline_status(settings: Settings) -> dict[str, Any]:
    """What `status` shows without a running server: files, persisted health, today's usage."""
    snapshot = load_pool(settings.pool_dir, Vault.of(settings))
    broker = Broker(snapshot, settings.routing, clock=time.time, budgets=settings.budgets)
    return asyncio.run(_stored_status(settings, broker, snapshot))


async def _stored_status(settings: Settings, broker: Broker, snapshot: PoolSnapshot) -> dict[str, Any]:
    """The status report from the store ``[store] backend`` names (a shared one: as the instances see it)."""
    store = open_store(settings)
    try:
        await store.start()  # Redis: connect and load the state (degraded when unreachable)
        restore_broker(broker, store, settings)  # cooldowns, quota windows, pins, active route
        rows = await asyncio.to_thread(today_usage, store)
        return {**status_report(settings, broker, snapshot, store, rows), "running": False}
    finally:
        await asyncio.to_thread(store.close)


def admin_get(
    settings: Settings,
    path: str,
    *,
    method: str = "GET",
    body: Any = None,
    timeout_s: float = 5.0,
    addr: str | None = None,
) -> Any:
    """Ask the running server's admin API (``body`` is sent as JSON); None when none runs."""
    server = find_server(settings, addr)
    if server is None:
        return None
    return admin_client.call(server, path, method=method, body=body, timeout_s=timeout_s)


def live_or_offline_status(settings: Settings, addr: str | None = None) -> dict[str, Any]:
    """The running server's status report, else the one built from files and the store."""
    server = find_server(settings, addr)
    if server is not None:
        return {**admin_client.call(server, "/admin/api/status"), "addr": server.addr, "running": True}
    return offline_status(settings)


@app.command("list")
def list_accounts(config: ConfigOption = None, as_json: JsonOption = False, addr: AddrOption = None) -> None:
    """Show every account: kind, provider, state and cooldown, today's requests and tokens."""
    with reported():
        settings = settings_from(config)
        data = live_or_offline_status(settings, addr)
    if as_json:
        print_json(data["accounts"])
        return
    table = Table(title=f"pool: {escape(data['pool_dir'])}")
    columns = ("id", "kind", "provider", "enabled", "state", "requests today", "tokens today")
    for column in (*columns, "plan", "token expires", "last refresh", "quota left"):
        table.add_column(column)
    records = load_pool(settings.pool_dir, Vault.of(settings)).by_id
    for a in data["accounts"]:
        state = a["state"] + (f" ({a['cooldown_s']:.0f}s)" if a["cooldown_s"] else "")
        if a["reason"]:
            state += f": {a['reason']}"
        table.add_row(
            escape(a["email"] or a["id"]),
            a["kind"],
            a["provider"],
            "yes" if a["enabled"] else "no",
            escape(state),
            *_today_columns(a["today"]),
            *map(escape, subscription_columns(records.get(a["id"]), a)),
        )
    console.print(table)
    if not data["accounts"]:
        console.print("the pool is empty: add one with `proxygate add-key --provider anthropic`")
    for bad in data["invalid_files"]:
        err_console.print(
            f"[yellow]skipped[/] {escape(bad['path'])}: {escape(bad['reason'])}", highlight=False
        )


@app.command()
def status(config: ConfigOption = None, as_json: JsonOption = False, addr: AddrOption = None) -> None:
    """Listen address, accounts by kind and state, and files that failed to load."""
    with reported():
        settings = settings_from(config)
        data = live_or_offline_status(settings, addr)
    if as_json:
        print_json(data)
        return
    where = data["addr"] if data["running"] else (addr or settings.addr)
    console.print(
        f"proxygate {'[green]running[/]' if data['running'] else '[dim]not running[/]'} on http://{escape(where)}"
    )
    console.print(f"route: {escape(data['route'])}   pool: {escape(data['pool_dir'])}")
    console.print(f"secrets: {escape(secrets_line(settings))}", highlight=False)
    if line := store_text(data.get("store")):
        console.print(line, highlight=False, markup=False)
    counts: dict[tuple[str, str], int] = {}
    for a in data["accounts"]:
        counts[(a["kind"], a["state"])] = counts.get((a["kind"], a["state"]), 0) + 1
    table = Table("kind", "state", "accounts")
    for (kind, state), n in sorted(counts.items()):
        table.add_row(kind, state, str(n))
    console.print(table)
    if data["accounts"]:
        console.print(account_table(data["accounts"]))
    if line := cache_text(data.get("cache")):
        console.print(line, highlight=False, markup=False)
    for t in data.get("tenants") or []:  # fair shares of the subscription windows (README, "Teams")
        uses = "".join(
            f"; {w['account']} {w['window']}: {w['use_pct']:.0f}% used of a {w['share_pct']:.0f}% share"
            for w in t["windows"]
        )
        console.print(
            f"tenant {t['display_name']}: share {t['share']:g}{uses}", highlight=False, markup=False
        )
    if data["invalid_files"]:
        console.print(f"[yellow]{len(data['invalid_files'])} invalid file(s):[/]")
        for bad in data["invalid_files"]:
            console.print(f"  {bad['path']}: {bad['reason']}", highlight=False, markup=False)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def windows_text(windows: list[dict[str, Any]]) -> str:
    """``5h 62% ↻1h05m`` per quota window, one a line; rejected windows say so."""
    lines = []
    for w in windows:
        if w["window"] == "overage":
            continue
        name = escape(w["window"] + (f"@{w['model']}" if w["model"] else ""))
        left = "?" if w["left_pct"] is None else f"{w['left_pct']:.0f}%"
        reset = "" if w["resets_in_s"] is None else f" ↻{_duration(w['resets_in_s'])}"
        lines.append(f"{name} {left}{reset}" + (" [red]rejected[/]" if w["rejected"] else ""))
    return "\n".join(lines) or "-"


def plan_rules_text(a: dict[str, Any]) -> str:
    """A subscription's reserve and overage policy (and answers served from overage), one a line."""
    lines = []
    if a.get("reserve_pct"):
        lines.append(f"reserve {a['reserve_pct']:g}%")
    if a.get("kind") == "claude" or a.get("overage_requests"):
        served = a.get("overage_requests") or 0
        lines.append(
            f"overage {a.get('overage', 'never')}" + (f", {served} answered from it" if served else "")
        )
    return "".join(f"\n{escape(line)}" for line in lines)


def _today_columns(today: dict[str, int] | None) -> tuple[str, str]:
    """Requests and tokens today; ``?`` when the shared store could not say (``status`` says why)."""
    return ("?", "?") if today is None else (str(today["requests"]), str(today["tokens"]))


def store_text(store: dict[str, Any] | None) -> str:
    """``shared state: redis`` plus why it is degraded, if it is; ``""`` for the embedded store when healthy."""
    if not store:
        return ""
    degraded = store.get("degraded") or ""
    if store.get("backend") == "lmdb" and not degraded:
        return ""
    return f"shared state: {store.get('backend')}" + (f" (degraded: {degraded})" if degraded else "")


def cache_text(cache: dict[str, Any] | None) -> str:
    """One line on conversations moved away from their prompt cache, or ``""`` when none moved."""
    if not cache or not cache.get("lost_count"):
        return ""
    return (
        f"prompt cache: {cache['lost_count']} conversation move(s) rewrote their cache, "
        f"~${cache['lost_usd']:.4f} at API prices"
    )


def account_table(accounts: list[dict[str, Any]]) -> Table:
    """Per account: health (cooldown reason and end), quota windows, leases in flight, pins."""
    table = Table("account", "state", "windows (left, reset in)", "in flight", "pins")
    for a in accounts:
        state = escape(a["state"])
        if a.get("cooldown_s"):
            state += f" {_duration(a['cooldown_s'])}"
        for model, left_s in (a.get("model_cooldowns") or {}).items():
            state += f"\n{escape(model)} cooling {_duration(left_s)}"
        if a.get("reason"):
            state += f"\n[dim]{escape(a['reason'])}[/]"
        state += plan_rules_text(a)
        table.add_row(
            escape(a["email"] or a["id"]), state, windows_text(a.get("windows") or []), str(a.get("inflight", 0)),
            str(a.get("pins", 0)),
        )  # fmt: skip
    return table


def _applied_live(server: RunningServer, account_id: str, is_done: Callable[[dict[str, Any]], bool]) -> bool:
    """Wait until the running server's status shows the change (its pool watcher applies it)."""
    deadline = time.monotonic() + LIVE_APPLY_WAIT_S
    while True:
        live = admin_client.call(server, "/admin/api/status")
        entry = next((a for a in live.get("accounts", []) if a.get("id") == account_id), None)
        if entry is not None and is_done(entry):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _set_enabled(ref: str, config: Path | None, addr: str | None, *, enabled: bool) -> None:
    verb = "enabled" if enabled else "disabled"
    with reported():
        settings = settings_from(config)
        account = set_enabled(settings.pool_dir, ref, enabled=enabled, vault=Vault.of(settings))
        server = find_server(settings, addr)
        if server is None:
            console.print(f"{verb} [bold]{escape(account.id)}[/]{NOT_RUNNING_NOTE}", highlight=False)
            return
        if not _applied_live(server, account.id, lambda entry: bool(entry.get("enabled")) == enabled):
            raise PoolError(
                f"{account.id}: {verb} in {account.path}, but the server at {server.addr} has not applied "
                "it; does it use another pool_dir?"
            )
    console.print(f"{verb} [bold]{escape(account.id)}[/]", highlight=False)


@app.command()
def enable(ref: RefArgument, config: ConfigOption = None, addr: AddrOption = None) -> None:
    """Route to an account again (persisted; a running server applies it at once)."""
    _set_enabled(ref, config, addr, enabled=True)


@app.command()
def disable(ref: RefArgument, config: ConfigOption = None, addr: AddrOption = None) -> None:
    """Stop routing to an account until `proxygate enable` (a running server applies it at once)."""
    _set_enabled(ref, config, addr, enabled=False)


@app.command()
def reset(ref: RefArgument, config: ConfigOption = None, addr: AddrOption = None) -> None:
    """Clear an account's cooldown and error state."""
    with reported():
        settings = settings_from(config)
        account = load_pool(settings.pool_dir, Vault.of(settings)).find(ref)
        server = find_server(settings, addr)
        if server is not None:
            admin_client.call(
                server, f"/admin/api/accounts/{quote(account.id, safe='')}/reset", method="POST"
            )
        else:  # no server running here: clear the stored state (a shared store's instances apply it at once)
            asyncio.run(_clear_stored_state(settings, account.id))
    note = "" if server is not None else NOT_RUNNING_NOTE
    if server is None and settings.store.backend == "redis":
        note = " (no server running here; the instances on the shared store apply it at once)"
    console.print(f"reset [bold]{escape(account.id)}[/]{note}", highlight=False)


async def _clear_stored_state(settings: Settings, account_id: str) -> None:
    store = open_store(settings)
    try:
        await store.start()
        await store.write_state(COOLDOWNS, account_id, None)  # StoreUnavailable: said, exit 1
    finally:
        await asyncio.to_thread(store.close)


def _comma_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


@app.command("add-key")
def add_key(
    provider: Annotated[
        str, typer.Option(help=f"One of: {', '.join(API_KEY_PROVIDERS)}.", metavar="PROVIDER")
    ],
    account_id: Annotated[
        str | None, typer.Option("--id", help="Account id (default: the provider name).", metavar="ID")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Base URL as the provider's SDK takes it.", metavar="URL")
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated model globs this key serves.", metavar="GLOBS")
    ] = None,
    formats: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated upstream formats in order of preference: anthropic, chat, responses, "
            "gemini (default: the provider's; chat for OpenAI-compatible servers).",
            metavar="FORMATS",
        ),
    ] = None,
    priority: Annotated[
        int | None, typer.Option(help="Higher is tried first by the priority strategy (default 0).")
    ] = None,
    weight: Annotated[
        float | None, typer.Option(help="Share of traffic against accounts of equal rank (default 1).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Add an API key to the pool. The key is read from a prompt or stdin, never from argv."""
    with reported():
        settings = settings_from(config)
        if provider not in API_KEY_PROVIDERS:
            raise PoolError(f"unknown provider {provider!r} (one of: {', '.join(API_KEY_PROVIDERS)})")
        name = account_id or provider
        taken = new_account_path(settings.pool_dir, "apikey", name)
        if taken.exists():
            raise PoolError(f"{taken} already exists: name this key with --id (e.g. --id {name}-2)")
        if sys.stdin.isatty():
            key = typer.prompt(f"{provider} API key", hide_input=True)
        else:
            key = sys.stdin.readline()
        key = key.strip()
        if not key:
            raise PoolError("no API key given")
        data: dict[str, Any] = {"provider": provider, "api_key": key}
        if account_id:
            data["id"] = account_id
        if base_url:
            data["base_url"] = base_url
        if models:
            data["models"] = _comma_list(models)
        if formats:
            data["formats"] = _comma_list(formats)
        if priority is not None:
            data["priority"] = priority
        if weight is not None:
            data["weight"] = weight
        try:
            path = add_account_file(settings.pool_dir, "apikey", name, data, vault=Vault.of(settings))
        except InvalidAccount as exc:
            raise PoolError(f"not added: {exc}") from None
    console.print(
        f"added [bold]{escape(path.stem)}[/] ({provider}, key {mask(key)}) → {escape(str(path))}",
        highlight=False,
    )


def _print_report(report: ImportReport) -> None:
    for path in report.written:
        console.print(f"added {path}", highlight=False, markup=False)
    for line in report.duplicates:
        err_console.print(f"[yellow]duplicate[/] {escape(line)}", highlight=False)
    for line in report.invalid:
        err_console.print(f"[red]invalid[/] {escape(line)}", highlight=False)
    console.print(
        f"{len(report.written)} added, {len(report.duplicates)} duplicate, {len(report.invalid)} invalid"
    )
    if report.invalid:
        raise typer.Exit(1)


FromOption = Annotated[Path, typer.Option("--from", help="JSON file to import.", exists=False)]


@app.command("import")
def import_accounts(
    source: Annotated[Path | None, typer.Option("--from", help="JSON file to import.")] = None,
    config: ConfigOption = None,
    local: Annotated[
        bool,
        typer.Option("--local", help="Import the Claude Code and Codex CLI logins of this machine."),
    ] = False,
    share: Annotated[
        bool,
        typer.Option(
            "--share/--take-over",
            help="With --local: share each login with its CLI (tokens written back on refresh), "
            "or take it over (the CLI logs in again).",
        ),
    ] = True,
    email: Annotated[
        str, typer.Option(help="With --local: the Claude account's email when ~/.claude.json names none.")
    ] = "",
) -> None:
    """Import accounts from a JSON array (--from), or this machine's CLI logins (--local)."""
    from proxygate.cli.local_logins import import_local

    with reported():
        settings = settings_from(config)
        if local == (source is not None):
            raise PoolError("say what to import: --from FILE, or --local")
        if source is None:
            import_local(settings, take_over=not share, email=email)
            return
        raw = read_json(source)  # the Codex CLI's auth.json is one login, not a list
        entries = [codex_entry(raw, source=source)] if is_codex_auth(raw) else read_entries(source)
        report = import_entries(settings.pool_dir, entries, vault=Vault.of(settings))
    _print_report(report)


@app.command("import-keys")
def import_keys(source: FromOption, config: ConfigOption = None) -> None:
    """Import API keys from a JSON array, one pool file each."""
    with reported():
        settings = settings_from(config)
        report = import_entries(
            settings.pool_dir, read_entries(source), kind_of=lambda _: "apikey", vault=Vault.of(settings)
        )
    _print_report(report)


@app.command()
def check(
    ref: RefArgument,
    model: Annotated[
        str | None, typer.Option(help="Model to ask (default: a cheap one of the provider).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """One minimal live call through an account; prints latency and what the provider said."""
    from proxygate.providers.check import check_account

    with reported():
        settings = settings_from(config)
        account = load_pool(settings.pool_dir, Vault.of(settings)).find(ref)
        literal = [m for m in account.models if not set("*?[") & set(m)]
        chosen = model or (literal[0] if literal else PROVIDERS[account.provider].check_model)
        if not chosen:
            raise PoolError(f"{account.id}: no model to check with; pass --model")
        result = asyncio.run(check_account(account, chosen, settings.timeouts))
    colour = "green" if result.status < 400 else "red"
    console.print(
        f"{escape(account.id)} ({escape(chosen)}): [{colour}]HTTP {result.status}[/] in {result.latency_ms:.0f} ms"
    )
    console.print(result.said, highlight=False, markup=False)
    if result.status >= 400:
        raise typer.Exit(1)
