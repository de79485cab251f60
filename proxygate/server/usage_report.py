"""The usage and request-log reports: one ``usage_report`` and one ``requests_page``.

The admin API (server/usage_api.py), `proxygate usage` / `proxygate requests` with no server
running, and the dashboard all call these, so every view agrees. They read the store only and
return plain JSON-ready dicts.

Cost is never invented (proxygate/prices): a row whose requests had no price has cost ``None``;
one where only some had a price has the priced sum with ``cost_is_partial``. For an API key the
cost is money spent; for a subscription account it is the API-equivalent value of its traffic.
Token totals are ``total_tokens`` (input + output + cache reads + cache writes), the parts beside.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from proxygate.errors import ClientError
from proxygate.pool.records import Account
from proxygate.store.base import Store, UsageRow, UsageTotals

By = Literal["day", "hour", "account", "model", "route", "format", "tenant"]
BY_CHOICES: tuple[str, ...] = get_args(By)

MAX_PAGE = 1000
"Most request-log entries one page returns."

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Period:
    since_ts: float
    until_ts: float
    is_hourly: bool
    "Read hourly rows (``--since 24h``, ``--by hour``) rather than daily ones."


def parse_period(since: str, now: float, *, by: str = "day") -> Period:
    """``""`` today (UTC); ``7d`` today and the 6 days before; ``24h`` the last 24 hours;
    ``2026-11-01`` from that UTC day on.

    Raises:
        ClientError: ``since`` is none of these, or in the future.
    """
    text = since.strip().lower()
    today_start = _day_start(now)
    is_hourly = by == "hour"
    if not text or text == "today":
        since_ts = today_start
    elif m := re.fullmatch(r"(\d{1,5})\s*d", text):
        since_ts = today_start - (max(int(m[1]), 1) - 1) * DAY_S
    elif m := re.fullmatch(r"(\d{1,6})\s*h", text):
        since_ts, is_hourly = now - int(m[1]) * 3600, True
    else:
        try:
            since_ts = utc_time_ts(since)
        except ValueError:
            raise ClientError(
                f"since: {since!r} is not a period; use 7d, 24h or a date like 2026-11-01"
            ) from None
        if since_ts > now:
            raise ClientError(f"since: {since!r} is in the future")
    return Period(since_ts, now, is_hourly)


def utc_time_ts(text: str) -> float:
    """``2026-11-01`` or ``2026-11-01T08:00`` as Unix seconds; without a zone it means UTC.

    Raises:
        ValueError: ``text`` is not an ISO date or time.
    """
    parsed = datetime.fromisoformat(text.strip())
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _day_start(ts: float) -> float:
    day = datetime.fromtimestamp(ts, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- usage -------------------------------------------------------------------------------------


def usage_report(
    store: Store, accounts: Iterable[Account], *, since: str = "", by: str = "day", now: float
) -> dict[str, Any]:
    """Usage of the period grouped ``by`` one dimension, with totals, a per-day series and cost.

    Each row holds the group's value under the ``by`` key (``"model": "claude-sonnet-4-5"``)
    and ``totals_json``'s fields; ``by=account`` rows add the account's kind and plan.
    """
    if by not in BY_CHOICES:
        raise ClientError(f"by: {by!r} is not one of {', '.join(BY_CHOICES)}")
    period = parse_period(since, now, by=by)
    rows = [_known_cost(r) for r in store.usage_rows(period.since_ts, now, hourly=period.is_hourly)]
    pool_accounts = {a.id: a for a in accounts}

    groups: dict[str, UsageTotals] = {}
    days: dict[str, UsageTotals] = {}
    per_account: dict[str, UsageTotals] = {}
    total = UsageTotals()
    for row in rows:
        groups.setdefault(_group(row, by), UsageTotals()).add(row.totals)
        days.setdefault(row.day, UsageTotals()).add(row.totals)
        per_account.setdefault(row.account_id, UsageTotals()).add(row.totals)
        total.add(row.totals)

    report_rows = []
    for key in sorted(groups, key=lambda k: _order(k, groups[k], by)):
        entry: dict[str, Any] = {by: key, **totals_json(groups[key])}
        if by == "account":
            entry.update(_account_fields(pool_accounts.get(key)))
        report_rows.append(entry)

    api_cost = UsageTotals()
    subscription_value = UsageTotals()
    for account_id, totals in per_account.items():
        account = pool_accounts.get(account_id)
        if account is not None:
            (subscription_value if account.is_oauth else api_cost).add(totals)
    return {
        "since": _iso(period.since_ts),
        "until": _iso(now),
        "by": by,
        "rows": report_rows,
        "total": {
            **totals_json(total),
            "api_cost_usd": cost_json(api_cost)[0],
            "subscription_value_usd": cost_json(subscription_value)[0],
        },
        "days": [
            {"day": day, "total_tokens": t.tokens, "cost_usd": cost_json(t)[0]}
            for day, t in _every_day(days, period)
        ],
        # What each subscription's traffic would have cost on the API, next to its plan.
        "subscriptions": [
            {
                "account": account.id,
                "kind": account.kind,
                "plan": account.plan,
                "requests": totals.requests,
                "total_tokens": totals.tokens,
                "api_value_usd": cost_json(totals)[0],
            }
            for account_id, totals in sorted(per_account.items())
            if (account := pool_accounts.get(account_id)) is not None and account.is_oauth
        ],
    }


def totals_json(t: UsageTotals) -> dict[str, Any]:
    cost, is_partial = cost_json(t)
    all_input = t.input_tokens + t.cache_read_tokens + t.cache_write_tokens
    return {
        "requests": t.requests,
        "errors": t.errors,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cache_read_tokens": t.cache_read_tokens,
        "cache_write_tokens": t.cache_write_tokens,
        "total_tokens": t.tokens,
        "cache_hit_rate": round(t.cache_read_tokens / all_input, 4) if all_input else None,
        "cost_usd": cost,
        "cost_is_partial": is_partial,
        "unpriced_requests": t.unpriced_requests,
    }


def cost_json(t: UsageTotals) -> tuple[float | None, bool]:
    """(cost, is_partial): None when no request with tokens had a price; never 0 for unknown."""
    if t.unpriced_requests and not t.cost_usd:
        return None, False
    return round(t.cost_usd, 6), bool(t.unpriced_requests)


def _known_cost(row: UsageRow) -> UsageRow:
    """Rows kept before costs were (no client format) have tokens of unknown cost."""
    if row.client_format or not row.totals.tokens or row.totals.unpriced_requests:
        return row
    totals = UsageTotals()
    totals.add(row.totals)
    totals.unpriced_requests = max(totals.requests, 1)
    totals.cost_usd = 0.0
    return UsageRow(row.bucket, row.account_id, row.model, row.client_format, row.route, row.tenant, totals)


def _group(row: UsageRow, by: str) -> str:
    match by:
        case "day":
            return row.day
        case "hour":
            return row.bucket
        case "account":
            return row.account_id
        case "model":
            return row.model
        case "route":
            return row.route
        case "format":
            return row.client_format
        case _:
            return row.tenant or "-"  # the owner (issue 14)


def _order(key: str, totals: UsageTotals, by: str) -> tuple[Any, ...]:
    """Time in order; everything else by tokens, most first."""
    return (key,) if by in ("day", "hour") else (-totals.tokens, key)


def _account_fields(account: Account | None) -> dict[str, Any]:
    if account is None:  # no longer in the pool
        return {"kind": "", "plan": "", "is_subscription": None}
    return {"kind": account.kind, "plan": account.plan, "is_subscription": account.is_oauth}


def _every_day(days: Mapping[str, UsageTotals], period: Period) -> list[tuple[str, UsageTotals]]:
    """One entry per UTC day of the period, days without traffic as zeros (the sparkline)."""
    first = datetime.fromtimestamp(period.since_ts, UTC).date()
    last = datetime.fromtimestamp(period.until_ts, UTC).date()
    out = []
    day = first
    while day <= last:
        key = day.isoformat()
        out.append((key, days.get(key) or UsageTotals()))
        day += timedelta(days=1)
    return out


# -- the request log -----------------------------------------------------------------------------


def requests_page(
    store: Store, *, limit: int = 50, before: str = "", account: str = "", status: str = ""
) -> dict[str, Any]:
    """Newest request-log entries first; ``next_before`` is the cursor of the next page (or None)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ClientError(f"limit: {limit} is not between 1 and {MAX_PAGE}")
    try:
        entries = store.requests(limit, before=before, account=account, status=status)
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    out = []
    for entry in entries:
        tokens = sum(
            int(entry.get(k) or 0)
            for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        )
        out.append({**entry, "total_tokens": tokens, "time": _iso(float(entry.get("ts") or 0))})
    return {
        "requests": out,
        "next_before": out[-1]["request_id"] if len(out) == limit else None,
    }
