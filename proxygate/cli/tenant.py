"""`proxygate tenant add|list|show|set|rotate-key|remove`: teammates' keys, limits and shares.

A running server applies a change at once through the admin API (/admin/api/tenants); with
no server running the change is written to the store and a server started later honours it.
A new key is printed once, on stdout, and is stored nowhere (only its SHA-256).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from proxygate.cli.accounts import NOT_RUNNING_NOTE, admin_get
from proxygate.cli.app import (
    AddrOption,
    Commands,
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
)
from proxygate.store.base import Store
from proxygate.store.open import open_store

tenant_app = Commands(help="Tenants: teammates' keys, limits and fair shares.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")

NameArg = Annotated[str, typer.Argument(help="Tenant name (a-z, 0-9, '.', '_', '-').", metavar="NAME")]
RpmOption = Annotated[int | None, typer.Option("--rpm", help="Requests per minute (0: no limit).")]
TpmOption = Annotated[
    int | None, typer.Option("--tpm", help="Tokens per minute, input + output (0: no limit).")
]
ConcurrencyOption = Annotated[
    int | None, typer.Option("--concurrency", help="Requests in flight at once (0: no limit).")
]
DailyTokensOption = Annotated[
    int | None, typer.Option("--daily-tokens", help="Tokens per UTC day (0: no limit).")
]
MonthlyTokensOption = Annotated[
    int | None, typer.Option("--monthly-tokens", help="Tokens per UTC month (0: no limit).")
]
DailyUsdOption = Annotated[
    float | None, typer.Option("--daily-usd", help="Dollars at API prices per UTC day (0: no limit).")
]
MonthlyUsdOption = Annotated[
    float | None, typer.Option("--monthly-usd", help="Dollars at API prices per UTC month (0: no limit).")
]
RouteOption = Annotated[
    str | None,
    typer.Option("--route", help="Routing config for this tenant (empty: the active one).", metavar="CONFIG"),
]
ModelsOption = Annotated[
    str | None,
    typer.Option(
        "--models", help="Model globs the tenant may use, comma-separated (empty: all).", metavar="GLOBS"
    ),
]
AliasesOption = Annotated[
    str | None,
    typer.Option(
        "--aliases", help="FROM=TO model aliases, comma-separated, over [routing] aliases.", metavar="PAIRS"
    ),
]
GuardrailsOption = Annotated[
    bool | None,
    typer.Option(
        "--guardrails/--no-guardrails", help="Redact this tenant's requests, or not (default: inherit)."
    ),
]
GuardrailsInheritOption = Annotated[
    bool, typer.Option("--guardrails-inherit", help="Follow the global guardrails setting again.")
]
CaptureOption = Annotated[
    bool | None,
    typer.Option("--capture/--no-capture", help="Capture this tenant's turns, or not (default: inherit)."),
]
CaptureInheritOption = Annotated[
    bool, typer.Option("--capture-inherit", help="Follow the global capture setting again.")
]
ShareOption = Annotated[
    float | None,
    typer.Option("--share", help="Weight in the fair shares of subscription windows (default 1)."),
]


def _changes(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _switch(name: str, value: bool | None, inherit: bool) -> bool | str | None:
    """A switch's change: on, off, "inherit", or None (not given)."""
    if inherit and value is not None:
        raise ClientError(f"--{name}-inherit and --{name}/--no-{name} exclude each other")
    return "inherit" if inherit else value


def _print_pending(report: dict[str, Any] | None) -> None:
    """Switches turned on that the running server started without: say when they apply."""
    for switch in (report or {}).get("applies_at_next_start", ()):
        err_console.print(
            f"[yellow]note:[/] {switch} is on for this tenant from the server's next start "
            f"(it started with {switch} off everywhere)"
        )


def _with_store(settings: Settings, action: Any) -> Any:
    store = open_store(settings)
    try:
        result = action(store)
        store.flush()
        return result
    finally:
        store.close()


def offline_reports(settings: Settings) -> list[dict[str, Any]]:
    """`tenant list` without a server: the stored tenants and their usage from the usage rows."""

    def read(store: Store) -> list[dict[str, Any]]:
        book = TenantBook(settings)
        book.replace_all(load_tenants(store))
        book.restore(store)
        return [book.report(name) for name in (OWNER, *sorted(book.tenants))]

    return list(_with_store(settings, read))


def _stored(store: Store, name: str) -> Any:
    tenants = load_tenants(store)
    if name not in tenants:
        raise ProxyError(f"no tenant {name!r}", status=404, error_class="not_found")
    return tenants[name]


def _print_key(name: str, key: str, *, live: bool, owner_locked_out: bool) -> None:
    console.print(f"tenant [bold]{escape(name)}[/]" + ("" if live else NOT_RUNNING_NOTE))
    console.print("key (shown once; only its hash is kept):")
    console.print(key, markup=False, highlight=False, soft_wrap=True)
    if owner_locked_out:
        err_console.print(
            "[yellow]note:[/] tenants exist and no proxy_token is set: requests now need a tenant key. "
            "Set proxy_token in config.toml to keep owner access."
        )


@tenant_app.command("add")
def add(
    name: NameArg,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    concurrency: ConcurrencyOption = None,
    daily_tokens: DailyTokensOption = None,
    monthly_tokens: MonthlyTokensOption = None,
    daily_usd: DailyUsdOption = None,
    monthly_usd: MonthlyUsdOption = None,
    route: RouteOption = None,
    models: ModelsOption = None,
    aliases: AliasesOption = None,
    share: ShareOption = None,
    guardrails: GuardrailsOption = None,
    guardrails_inherit: GuardrailsInheritOption = False,
    capture: CaptureOption = None,
    capture_inherit: CaptureInheritOption = False,
    config: ConfigOption = None,
    addr: AddrOption = None,
) -> None:
    """Add a tenant and print its new key once."""
    changes = _changes(
        rpm=rpm,
        tpm=tpm,
        concurrency=concurrency,
        daily_tokens=daily_tokens,
        monthly_tokens=monthly_tokens,
        daily_usd=daily_usd,
        monthly_usd=monthly_usd,
        route=route,
        models=models,
        aliases=aliases,
        share=share,
    )
    with reported():
        changes.update(
            _changes(
                guardrails=_switch("guardrails", guardrails, guardrails_inherit),
                capture=_switch("capture", capture, capture_inherit),
            )
        )
        settings = settings_from(config)
        live = admin_get(
            settings, "/admin/api/tenants", method="POST", body={"name": name, **changes}, addr=addr
        )
        if live is not None:
            key, locked = live["key"], live["owner_needs_token"]
            _print_pending(live.get("tenant"))
        else:

            def write(store: Store) -> str:
                if name in load_tenants(store):
                    raise ClientError(f"tenant {name!r} exists (change it with `proxygate tenant set`)")
                tenant, key = created(name, changes, now=time.time(), routes=settings.routing.configs)
                save_tenant(store, tenant)
                return key

            key, locked = _with_store(settings, write), not settings.proxy_token
    _print_key(name, key, live=live is not None, owner_locked_out=locked)


@tenant_app.command("set")
def set_(
    name: NameArg,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    concurrency: ConcurrencyOption = None,
    daily_tokens: DailyTokensOption = None,
    monthly_tokens: MonthlyTokensOption = None,
    daily_usd: DailyUsdOption = None,
    monthly_usd: MonthlyUsdOption = None,
    route: RouteOption = None,
    models: ModelsOption = None,
    aliases: AliasesOption = None,
    share: ShareOption = None,
    guardrails: GuardrailsOption = None,
    guardrails_inherit: GuardrailsInheritOption = False,
    capture: CaptureOption = None,
    capture_inherit: CaptureInheritOption = False,
    config: ConfigOption = None,
    addr: AddrOption = None,
) -> None:
    """Change a tenant's limits or settings (only the options given)."""
    changes = _changes(
        rpm=rpm,
        tpm=tpm,
        concurrency=concurrency,
        daily_tokens=daily_tokens,
        monthly_tokens=monthly_tokens,
        daily_usd=daily_usd,
        monthly_usd=monthly_usd,
        route=route,
        models=models,
        aliases=aliases,
        share=share,
    )
    with reported():
        changes.update(
            _changes(
                guardrails=_switch("guardrails", guardrails, guardrails_inherit),
                capture=_switch("capture", capture, capture_inherit),
            )
        )
        settings = settings_from(config)
        live = admin_get(settings, f"/admin/api/tenants/{name}", method="PATCH", body=changes, addr=addr)
        if live is None:

            def write(store: Store) -> None:
                save_tenant(store, changed(_stored(store, name), changes, routes=settings.routing.configs))

            _with_store(settings, write)
    console.print(f"tenant [bold]{escape(name)}[/] changed" + ("" if live is not None else NOT_RUNNING_NOTE))
    _print_pending(None if live is None else live.get("tenant"))


@tenant_app.command("rotate-key")
def rotate_key(name: NameArg, config: ConfigOption = None, addr: AddrOption = None) -> None:
    """Give a tenant a new key (printed once); the old one stops working."""
    with reported():
        settings = settings_from(config)
        live = admin_get(settings, f"/admin/api/tenants/{name}/rotate-key", method="POST", body={}, addr=addr)
        if live is not None:
            key = live["key"]
        else:

            def write(store: Store) -> str:
                tenant, key = rotated(_stored(store, name))
                save_tenant(store, tenant)
                return key

            key = _with_store(settings, write)
    _print_key(name, key, live=live is not None, owner_locked_out=False)


@tenant_app.command("remove")
def remove(name: NameArg, config: ConfigOption = None, addr: AddrOption = None) -> None:
    """Remove a tenant; its key stops working."""
    with reported():
        settings = settings_from(config)
        live = admin_get(settings, f"/admin/api/tenants/{name}", method="DELETE", addr=addr)
        if live is None:

            def write(store: Store) -> None:
                _stored(store, name)
                delete_tenant(store, name)

            _with_store(settings, write)
    console.print(f"removed tenant [bold]{escape(name)}[/]" + ("" if live is not None else NOT_RUNNING_NOTE))


def _reports(settings: Settings, addr: str | None) -> list[dict[str, Any]]:
    live = admin_get(settings, "/admin/api/tenants", addr=addr)
    return list(live["tenants"]) if live is not None else offline_reports(settings)


@tenant_app.command("list")
def list_(config: ConfigOption = None, as_json: JsonOption = False, addr: AddrOption = None) -> None:
    """Every tenant (the owner as -): key prefix, limits, usage today and this month, share."""
    with reported():
        reports = _reports(settings_from(config), addr)
    if as_json:
        print_json([_flat(r) for r in reports])
        return
    table = Table(
        "name", "key", "limits", "requests today", "tokens today", "tokens month", "$ today", "share"
    )
    for r in reports:
        u = r["usage"]
        table.add_row(
            escape(r["display_name"]),
            escape(r.get("key_hint", "")),
            escape(_limits_text(r)),
            str(u["requests_today"]),
            f"{u['tokens_today']:,}",
            f"{u['tokens_month']:,}",
            f"{u['usd_today']:.4f}",
            f"{r['share']:g}" + _windows_text(r),
        )
    console.print(table)


@tenant_app.command("show")
def show(
    name: NameArg, config: ConfigOption = None, as_json: JsonOption = False, addr: AddrOption = None
) -> None:
    """One tenant's limits, settings, usage and share."""
    with reported():
        settings = settings_from(config)
        reports = {r["display_name"]: r for r in _reports(settings, addr)}
        if name not in reports:
            raise ProxyError(f"no tenant {name!r}", status=404, error_class="not_found")
    found = _flat(reports[name])
    if as_json:
        print_json(found)
        return
    for key, value in found.items():
        console.print(f"{key}: {escape(str(value))}", highlight=False)


def _flat(report: dict[str, Any]) -> dict[str, Any]:
    """One object per tenant for scripts: name, limits, settings and usage side by side."""
    data = {k: v for k, v in report.items() if k != "usage"}
    data["name"] = report["display_name"]
    data.pop("display_name", None)
    data.update(report["usage"])
    return data


def _limits_text(r: dict[str, Any]) -> str:
    names = ("rpm", "tpm", "concurrency", "daily_tokens", "monthly_tokens", "daily_usd", "monthly_usd")
    parts = [f"{n}={r[n]:g}" for n in names if r.get(n)]
    if r.get("models"):
        parts.append("models=" + ",".join(r["models"]))
    if r.get("route"):
        parts.append(f"route={r['route']}")
    for switch in ("guardrails", "capture"):
        if r.get(switch, "inherit") != "inherit":
            parts.append(f"{switch}={r[switch]}")
    return " ".join(parts) or "-"


def _windows_text(r: dict[str, Any]) -> str:
    uses = r.get("windows") or []
    return "".join(
        f"\n{w['account']} {w['window']}: {w['use_pct']:.0f}% of {w['share_pct']:.0f}%" for w in uses
    )
