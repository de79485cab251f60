"""The pool's quota, polled from the providers and served back to clients.

Two halves of one idea. ``quota_polling`` (a cleanup context) runs
``server/quota_poll.py``'s ``QuotaPoller`` for the app's lifetime, feeding the broker's headroom. ``wham_usage`` answers
``GET /backend-api/wham/usage`` in the ChatGPT usage shape (peers.md §3.2) from that headroom,
aggregated over the pool's ChatGPT accounts: Codex CLI ≥ 0.154 reads its limits there and
blocks submission when *its* account is exhausted, so pointed at proxygate it must see the
pool's limits instead — exhausted only when every account is.

Aggregation per window: ``used_percent`` = 100 × (1 − mean fraction left over accounts that
reported it; a reset window counts as full); ``reset_at`` = the earliest reset among
accounts; ``limit_reached`` only when every serving account is refused now.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from proxygate.broker.headroom import Headroom
from proxygate.errors import ProxyError
from proxygate.server.ingress import check_token, render_error
from proxygate.server.keys import BROKER, PIPELINE, POOL, SETTINGS, UPSTREAM
from proxygate.server.quota_poll import QuotaPoller
from proxygate.server.tasks import supervise
from proxygate.wire.ir import Format

# Codex's defaults when no account reported a window length (peers.md §3.2: 300 min, 7 d).
_DEFAULT_WINDOW_S = {"primary": 5 * 3600, "secondary": 7 * 86400}

# Plans in the order of their limits, to report the pool's best.
_PLAN_ORDER = ("free", "go", "plus", "team", "business", "edu", "enterprise", "pro")


async def quota_polling(app: web.Application) -> AsyncIterator[None]:
    """Poll subscription usage endpoints while the app runs (after the upstream session exists)."""
    settings = app[SETTINGS]
    poller = QuotaPoller(
        settings.oauth,
        app[UPSTREAM],
        app[BROKER],
        app[PIPELINE].keeper,
        lambda: app[POOL][0].accounts,
        clock=app[BROKER].clock,
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(supervise("quota poller", lambda: poller.run(stop), stop=stop))
        try:
            yield
        finally:
            stop.set()


def pooled_window(windows: list[Headroom], name: str, now: float) -> dict[str, Any] | None:
    """One ChatGPT usage window for the whole pool, or None when no account reported it."""
    if not windows:
        return None
    lefts = [left for w in windows if (left := w.left(now)) is not None]
    mean_left = sum(lefts) / len(lefts) if lefts else 1.0
    resets = [w.resets_at for w in windows if w.resets_at is not None and w.resets_at > now]
    reset_at = min(resets) if resets else None
    lengths = [w.window_s for w in windows if w.window_s]
    return {
        "used_percent": round(100.0 * (1.0 - mean_left)),
        "limit_window_seconds": int(lengths[0]) if lengths else _DEFAULT_WINDOW_S[name],
        "reset_after_seconds": None if reset_at is None else max(int(reset_at - now), 0),
        "reset_at": None if reset_at is None else int(reset_at),
    }


def pooled_usage(app: web.Application, now: float) -> dict[str, Any]:
    """The ChatGPT usage body for the pool's serving ChatGPT accounts."""
    broker = app[BROKER]
    accounts = [
        a
        for a in app[POOL][0].accounts
        if a.kind == "chatgpt" and not a.disabled and not broker.state(a.id).needs_reauth
    ]
    by_window: dict[str, list[Headroom]] = {"primary": [], "secondary": []}
    # Windows are named by length (broker/headroom.codex_window): the short one is Codex's primary.
    position = {"5h": "primary", "primary": "primary", "7d": "secondary", "secondary": "secondary"}
    refused = 0
    for account in accounts:
        state = broker.state(account.id)
        windows = state.windows
        for w in windows.values():
            if not w.model and (name := position.get(w.window)) is not None:
                by_window[name].append(w)
        is_blocked = (
            any(w.is_blocking(now) for w in windows.values() if not w.model) or state.cooling(now) > 0
        )
        refused += is_blocked
    limit_reached = not accounts or refused == len(accounts)
    plans = [a.plan for a in accounts if a.plan in _PLAN_ORDER]
    return {
        "plan_type": max(plans, key=_PLAN_ORDER.index) if plans else "plus",
        "rate_limit": {
            "allowed": not limit_reached,
            "limit_reached": limit_reached,
            "primary_window": pooled_window(by_window["primary"], "primary", now),
            "secondary_window": pooled_window(by_window["secondary"], "secondary", now),
        },
        "credits": {"has_credits": False, "unlimited": False, "balance": None},
    }


async def wham_usage(request: web.Request) -> web.Response:
    try:
        check_token(request.app[SETTINGS], request, Format.responses)
    except ProxyError as exc:
        return render_error(Format.responses, exc, "")
    return web.json_response(pooled_usage(request.app, request.app[BROKER].clock()))


def add_routes(app: web.Application) -> None:
    """The pooled usage route (under both prefixes Codex may use) and the polling lifetime."""
    app.router.add_get("/backend-api/wham/usage", wham_usage)
    app.router.add_get("/api/codex/usage", wham_usage)
    app.cleanup_ctx.append(quota_polling)
