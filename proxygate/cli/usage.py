"""Usage commands: `proxygate usage`, `proxygate requests`, `proxygate prices`.

`usage` and `requests` ask the running server's admin API when there is one (its queue is
committed first, so the latest request shows), else read the store directly; both ways run the
same report functions (server/usage_report.py), so the output is the same. An unknown cost is
printed as "–" (null in JSON), never as 0.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from proxygate.cli import admin_client
from proxygate.cli.admin_client import find_server
from proxygate.cli.app import AddrOption, ConfigOption, JsonOption, app, console, reported, settings_from
from proxygate.config import Settings
from proxygate.errors import ClientError
from proxygate.pool.files import load_pool
from proxygate.prices import Price, PriceTable, Rates, load_prices
from proxygate.server.usage_report import BY_CHOICES, parse_period, requests_page, usage_report
from proxygate.store.base import Store
from proxygate.store.open import open_store
from proxygate.store.secrets import Vault

SPARKS = "▁▂▃▄▅▆▇█"

# `requests --follow` asks for new entries this often.
FOLLOW_INTERVAL_S = 1.0

CSV_COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "total_tokens",
    "cache_hit_rate",
    "cost_usd",
    "cost_is_partial",
    "unpriced_requests",
)


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    store = open_store(settings)
    try:
        yield store
    finally:
        store.close()


def _print_json(data: Any) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


# -- usage -------------------------------------------------------------------------------------


def fetch_usage(settings: Settings, *, since: str, by: str, addr: str | None) -> dict[str, Any]:
    """The usage report from the running server, or from the store when none runs."""
    server = find_server(settings, addr)
    if server is not None:
        report: dict[str, Any] = admin_client.call(
            server, "/admin/api/usage?" + urlencode({"since": since, "by": by}), timeout_s=30.0
        )
        return report
    accounts = load_pool(settings.pool_dir, Vault.of(settings)).accounts
    with _store(settings) as store:
        return usage_report(store, accounts, since=since, by=by, now=time.time())


@app.command()
def usage(
    since: Annotated[
        str,
        typer.Option(
            help="Start of the period: 7d (today and 6 days before), 24h, or a UTC date 2026-11-01.",
            metavar="7d|24h|DATE",
        ),
    ] = "",
    by: Annotated[str, typer.Option(help="Group rows by this.", metavar="|".join(BY_CHOICES))] = "day",
    as_json: JsonOption = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print CSV (a header row, then one row per group).")
    ] = False,
    config: ConfigOption = None,
    addr: AddrOption = None,
) -> None:
    """Tokens, cache hit rate and cost (API price; for subscriptions the API-equivalent value); default: today."""
    if by not in BY_CHOICES:
        raise typer.BadParameter(f"{by!r} is not one of {', '.join(BY_CHOICES)}", param_hint="--by")
    try:
        parse_period(since, time.time(), by=by)
    except ClientError as exc:
        raise typer.BadParameter(exc.message, param_hint="--since") from None
    with reported():
        report = fetch_usage(settings_from(config), since=since, by=by, addr=addr)
    if as_json:
        _print_json(report)
    elif as_csv:
        write_csv(report)
    else:
        print_usage(report)


def write_csv(report: dict[str, Any]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    by = report["by"]
    writer.writerow((by, *CSV_COLUMNS))
    for row in report["rows"]:
        writer.writerow((row[by], *("" if row.get(k) is None else row[k] for k in CSV_COLUMNS)))


def money(cost: float | None, *, is_partial: bool = False) -> str:
    """$1.23, $0.0042; "–" when unknown; "≥ $1.23" when some requests had no price."""
    if cost is None:
        return "–"
    text = f"${cost:,.2f}" if cost >= 0.01 or cost == 0 else f"${cost:.4f}"
    return f"≥ {text}" if is_partial else text


def tokens(n: int) -> str:
    """12,345 up to 99,999; then 123.4k, 12.35M: a column stays narrow."""
    if n < 100_000:
        return f"{n:,}"
    if n < 10_000_000:
        return f"{n / 1000:,.1f}k"
    return f"{n / 1_000_000:,.2f}M"


def sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    if not top:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(int(v / top * (len(SPARKS) - 1) + 0.5), len(SPARKS) - 1)] for v in values)


def _hit_rate(rate: float | None) -> str:
    return "–" if rate is None else f"{rate:.0%}"


def print_usage(report: dict[str, Any]) -> None:
    by = report["by"]
    until = "now" if report["until"][:10] == datetime.now(UTC).date().isoformat() else report["until"]
    table = Table(title=f"Usage by {by}, {report['since'][:16].replace('T', ' ')} UTC → {until}")
    table.add_column(by.capitalize(), no_wrap=True)
    for name in ("Requests", "Input", "Output", "Cache read", "Cache write", "Total", "Hit"):
        table.add_column(name, justify="right")
    table.add_column("Cost", justify="right", no_wrap=True)

    def cells(row: dict[str, Any]) -> list[str]:
        errors = f" [red]({row['errors']} err)[/]" if row["errors"] else ""
        return [
            f"{row['requests']:,}{errors}",
            *(
                tokens(row[k])
                for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
            ),
            tokens(row["total_tokens"]),
            _hit_rate(row["cache_hit_rate"]),
            money(row["cost_usd"], is_partial=row["cost_is_partial"]),
        ]

    for row in report["rows"]:
        name = escape(str(row[by]) or "(unknown)")
        if by == "hour":  # 2026-12-05T21 → 2026-12-05 21:00
            name = name.replace("T", " ") + ":00"
        if by == "account":
            name += f" [dim]({_plan(row)})[/]"
        table.add_row(name, *cells(row))
    total = report["total"]
    table.add_section()
    table.add_row("[bold]Total[/]", *cells(total))
    console.print(table)
    notes = []
    if total["unpriced_requests"]:
        notes.append(
            f"{total['unpriced_requests']} request(s) used a model with no price: their cost is unknown "
            "(see `proxygate prices`)."
        )
    spent, value = total["api_cost_usd"], total["subscription_value_usd"]
    notes.append(f"API keys: {money(spent)} spent · subscriptions: {money(value)} API-equivalent value")
    for sub in report["subscriptions"]:
        plan = " ".join(p for p in (sub["kind"], sub["plan"]) if p) or "subscription"
        notes.append(
            f"  {escape(sub['account'])} ({escape(plan)} plan): {money(sub['api_value_usd'])} at API prices, "
            f"{tokens(sub['total_tokens'])} tokens"
        )
    if (lost := report.get("cache_lost")) and lost["count"]:
        notes.append(
            f"Prompt cache lost by moving conversations: {lost['count']} move(s), "
            f"{money(lost['usd'])} of cache written again"
        )
    days = report["days"]
    if len(days) > 1:
        notes.append(
            f"Tokens per day {days[0]['day']} … {days[-1]['day']}: {sparkline([d['total_tokens'] for d in days])}"
        )
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)


def _plan(row: dict[str, Any]) -> str:
    if row.get("is_subscription") is None:
        return "not in pool"
    if not row["is_subscription"]:
        return "API key"
    return escape(" ".join(p for p in (row["kind"], row["plan"]) if p))


# -- requests ----------------------------------------------------------------------------------


def fetch_requests(
    settings: Settings, *, addr: str | None, limit: int, before: str = "", account: str = "", status: str = ""
) -> dict[str, Any]:
    query = {"limit": limit, "before": before, "account": account, "status": status}
    server = find_server(settings, addr)
    if server is not None:
        page: dict[str, Any] = admin_client.call(
            server, "/admin/api/requests?" + urlencode({k: v for k, v in query.items() if v})
        )
        return page
    with _store(settings) as store:
        return requests_page(store, limit=limit, before=before, account=account, status=status)


def newer_than(entries: list[dict[str, Any]], last_id: str) -> list[dict[str, Any]]:
    """The entries of a newest-first page that came after ``last_id``, oldest first."""
    fresh = []
    for entry in entries:
        if entry["request_id"] == last_id:
            break
        fresh.append(entry)
    return fresh[::-1]


@app.command()
def requests(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new requests (Ctrl-C stops).")
    ] = False,
    account: Annotated[str, typer.Option(help="Only this account's requests.")] = "",
    status: Annotated[str, typer.Option(help="Only this status: 429, 5xx, 4xx …")] = "",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many of the newest to show.")] = 20,
    before: Annotated[str, typer.Option(help="Older than this request id (the next page).")] = "",
    as_json: JsonOption = False,
    config: ConfigOption = None,
    addr: AddrOption = None,
) -> None:
    """The request log: id (as in x-proxygate-request-id), model, account, status, latency, tokens, cost."""
    if status and (len(status) != 3 or any(c not in "0123456789xX" for c in status)):
        raise typer.BadParameter(
            f"{status!r}: expected three digits or x, like 429 or 5xx", param_hint="--status"
        )
    with reported():
        settings = settings_from(config)
        page = fetch_requests(settings, addr=addr, limit=limit, before=before, account=account, status=status)
    if as_json and not follow:
        _print_json(page)
        return
    entries = page["requests"][::-1]
    show: Callable[[list[dict[str, Any]]], None] = _print_json_lines if as_json else _print_requests
    show(entries)
    if not follow:
        return
    last_id = page["requests"][0]["request_id"] if page["requests"] else ""
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL_S)
            with reported():
                fresh = newer_than(
                    fetch_requests(settings, addr=addr, limit=100, account=account, status=status)[
                        "requests"
                    ],
                    last_id,
                )
            if fresh:
                show(fresh)
                last_id = fresh[-1]["request_id"]
    except KeyboardInterrupt:
        return


def _print_json_lines(entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        typer.echo(orjson.dumps(entry).decode())


def _print_requests(entries: list[dict[str, Any]]) -> None:
    if not entries:
        console.print("no requests logged")
        return
    today = datetime.now(UTC).date().isoformat()
    table = Table()
    table.add_column("Time (UTC)", no_wrap=True)
    table.add_column("Id", no_wrap=True)
    table.add_column("Model")
    table.add_column("Account")
    for name in ("Status", "Tries", "First byte", "Total", "Tokens"):
        table.add_column(name, justify="right")
    table.add_column("Cost", justify="right", no_wrap=True)
    for e in entries:
        when = str(e.get("time", ""))
        model = e.get("model") or ""
        asked = e.get("model_asked") or model
        status_text = str(e["status"]) + (f" {e['error_class']}" if e.get("error_class") else "")
        table.add_row(
            when[11:19] if when.startswith(today) else when[:16].replace("T", " "),
            escape(e["request_id"]),
            escape(asked if asked == model else f"{asked} → {model}"),
            escape(e.get("account_id") or "-"),
            f"[red]{escape(status_text)}[/]" if int(e["status"]) >= 400 else status_text,
            str(e.get("attempts") or ""),
            f"{e['first_byte_ms']:,.0f} ms" if e.get("first_byte_ms") else "–",
            f"{e.get('latency_ms') or 0:,.0f} ms",
            tokens(int(e.get("total_tokens") or 0)),
            money(e.get("cost_usd")),
        )
    console.print(table)


# -- prices ------------------------------------------------------------------------------------


def price_json(price: Price) -> dict[str, Any]:
    lc = price.long_context
    return {
        "model": price.model,
        "aliases": list(price.aliases),
        "provider": price.provider,
        **_rates_json(price.rates),
        "long_context": None if lc is None else {"above_tokens": price.long_context_above, **_rates_json(lc)},
        "origin": price.origin,
        "source": price.source,
        "date": price.date,
    }


def _rates_json(rates: Rates) -> dict[str, float]:
    return {
        "input": rates.input,
        "output": rates.output,
        "cache_read": rates.cache_read,
        "cache_write": rates.cache_write,
        "cache_write_1h": rates.cache_write_1h,
    }


@app.command()
def prices(
    model: Annotated[
        str | None, typer.Argument(help="Show the price that applies to this model name.")
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """API prices in USD per million tokens, and where each comes from (shipped, file, config)."""
    with reported():
        settings = settings_from(config)
        table = load_prices(settings.data_dir, settings.prices)
    if model is not None:
        _print_one_price(table, model, as_json=as_json)
        return
    entries = table.prices()
    if as_json:
        _print_json([price_json(p) for p in entries])
        return
    out = Table(title="Prices, USD per million tokens")
    out.add_column("Model", no_wrap=True)
    out.add_column("Provider")
    for name in ("In", "Out", "Cache read", "Write 5m", "Write 1h"):
        out.add_column(name, justify="right")
    out.add_column("Long prompts")
    out.add_column("From")
    for p in entries:
        out.add_row(*_price_cells(p))
    console.print(out)
    sources = dict.fromkeys(f"{p.provider}: {p.source}" for p in entries if p.origin == "shipped")
    console.print("Shipped prices (From: the date each took effect) come from", highlight=False)
    for source in sources:
        console.print(f"  {escape(source)}", highlight=False)


def _price_cells(p: Price) -> list[str]:
    r = p.rates
    long = ""
    if p.long_context is not None:
        lc = p.long_context
        long = f">{p.long_context_above // 1000}k: {lc.input:g} / {lc.output:g}"
    return [
        escape(p.model),
        p.provider or "-",
        *(f"{v:g}" for v in (r.input, r.output, r.cache_read, r.cache_write, r.cache_write_1h)),
        long,
        p.date if p.origin == "shipped" else p.origin,
    ]


def _print_one_price(table: PriceTable, model: str, *, as_json: bool) -> None:
    price = table.find(model)
    if as_json:
        _print_json({"model": model, "price": None if price is None else price_json(price)})
        return
    if price is None:
        console.print(f"no price for {escape(model)}: its cost is unknown (shown as –); add one in "
                      "<data_dir>/prices.toml or \\[prices] in config.toml")  # fmt: skip
        return
    r = price.rates
    lines = [
        f"{escape(model)} is priced as [bold]{escape(price.model)}[/] ({price.provider or 'no provider'}), "
        "USD per million tokens:",
        f"  input {r.input:g} · output {r.output:g} · cache read {r.cache_read:g} · "
        f"cache write {r.cache_write:g} (1 h: {r.cache_write_1h:g})",
    ]
    if price.long_context is not None:
        lc = price.long_context
        lines.append(
            f"  prompts over {price.long_context_above:,} tokens: input {lc.input:g} · output {lc.output:g} · "
            f"cache read {lc.cache_read:g} · cache write {lc.cache_write:g} (1 h: {lc.cache_write_1h:g})"
        )
    where = (
        f"shipped, {price.date}: {price.source}"
        if price.origin == "shipped"
        else f"{price.origin}: {price.source}"
    )
    lines.append(f"  from {escape(where)}")
    for line in lines:
        console.print(line, highlight=False)
