"""Quota polling: the subscriptions' free usage endpoints, read into broker ``Headroom`` windows.

Both providers publish a subscription's windows at an endpoint that costs no quota
(peers.md §3.1, §3.2): Anthropic ``/api/oauth/usage`` (``five_hour``, ``seven_day``,
``seven_day_opus``, ``seven_day_sonnet`` as ``{utilization, resets_at}``, utilization in
percent) and ChatGPT ``/backend-api/wham/usage`` (``rate_limit.primary_window`` /
``secondary_window`` with ``used_percent`` and ``reset_at``). Windows are named as the
response headers name them (``5h``, ``7d``, ``primary``, ``secondary``; broker/headroom.py),
so a polled window and a header-observed one replace each other.

``QuotaPoller`` polls every OAuth account every ``usage_poll_s`` (±20 % jitter, so a pool's
polls do not line up), and again soon after the account was rate-limited: a cooldown whose
window has in fact reset is then cleared early by ``Broker.update_headroom``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from proxygate.auth.tokens import CODEX_USER_AGENT
from proxygate.broker import Broker
from proxygate.broker.headroom import Headroom
from proxygate.config import OAuthSettings
from proxygate.errors import UpstreamError
from proxygate.pool.records import Account
from proxygate.providers.oauth import TokenKeeper
from proxygate.providers.upstream import OAUTH_BETA

log = logging.getLogger("proxygate.usage")

Clock = Callable[[], float]

USAGE_TIMEOUT = aiohttp.ClientTimeout(total=20)

# Anthropic usage fields → (window key as the unified headers name it, model scope, length).
_CLAUDE_WINDOWS: dict[str, tuple[str, str, float]] = {
    "five_hour": ("5h", "", 5 * 3600.0),
    "seven_day": ("7d", "", 7 * 86400.0),
    "seven_day_opus": ("7d_opus", "opus", 7 * 86400.0),
    "seven_day_sonnet": ("7d_sonnet", "sonnet", 7 * 86400.0),
}

# After a 429, poll again once this much time has passed since the last poll (the usage
# endpoints are themselves rate-limited, peers.md §3.1).
AFTER_429_MIN_GAP_S = 30.0
_TICK_S = 5.0


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _epoch(value: Any) -> float | None:
    if (n := _number(value)) is not None:
        return n / 1000 if n > 1e11 else n
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _left(used_percent: float) -> float:
    return min(max(1.0 - used_percent / 100.0, 0.0), 1.0)


def parse_claude_usage(data: Any, now: float) -> list[Headroom]:
    """Anthropic ``/api/oauth/usage`` → windows ``5h``, ``7d``, ``7d_opus``, ``7d_sonnet``."""
    if not isinstance(data, dict):
        return []
    found = []
    for field, (window, model, length_s) in _CLAUDE_WINDOWS.items():
        entry = data.get(field)
        if not isinstance(entry, dict):
            continue
        used = _number(entry.get("utilization"))
        found.append(
            Headroom(
                window,
                None if used is None else _left(used),
                _epoch(entry.get("resets_at")),
                "anthropic-usage",
                now,
                model=model,
                is_rejected=used is not None and used >= 100.0,
                window_s=length_s,
            )
        )
    return found


def parse_chatgpt_usage(data: Any, now: float) -> list[Headroom]:
    """ChatGPT ``/wham/usage`` → windows ``primary`` (≈5 h) and ``secondary`` (≈7 d)."""
    limits = data.get("rate_limit") if isinstance(data, dict) else None
    if not isinstance(limits, dict):
        return []
    found = []
    for window in ("primary", "secondary"):
        entry = limits.get(f"{window}_window")
        if not isinstance(entry, dict):
            continue
        used = _number(entry.get("used_percent"))
        reset_at = _epoch(entry.get("reset_at"))
        if reset_at is None and (after := _number(entry.get("reset_after_seconds"))) is not None:
            reset_at = now + after
        found.append(
            Headroom(
                window,
                None if used is None else _left(used),
                reset_at,
                "codex-usage",
                now,
                is_rejected=(used is not None and used >= 100.0) or bool(limits.get("limit_reached")),
                window_s=_number(entry.get("limit_window_seconds")),
            )
        )
    return found


def usage_request(account: Account, settings: OAuthSettings) -> tuple[str, dict[str, str]]:
    """URL and headers of the usage endpoint for ``account`` (whose token is fresh)."""
    auth = {"authorization": f"Bearer {account.access_token}", "accept": "application/json"}
    if account.kind == "chatgpt":
        return settings.openai.usage_url, {
            **auth,
            "chatgpt-account-id": account.account_id,
            "user-agent": CODEX_USER_AGENT,
        }
    return settings.claude.usage_url, {**auth, "anthropic-beta": OAUTH_BETA}


async def fetch_usage(
    session: aiohttp.ClientSession, account: Account, settings: OAuthSettings, now: float
) -> list[Headroom]:
    """One poll of one account; ``UpstreamError`` (status kept) when the endpoint refuses."""
    url, headers = usage_request(account, settings)
    try:
        async with session.get(url, headers=headers, timeout=USAGE_TIMEOUT) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise UpstreamError(f"{account.id}: usage endpoint unreachable: {type(exc).__name__}") from exc
    if status >= 400:
        raise UpstreamError(f"{account.id}: usage endpoint HTTP {status}", status=status)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{account.id}: usage endpoint answered no JSON") from None
    if account.kind == "chatgpt":
        return parse_chatgpt_usage(data, now)
    return parse_claude_usage(data, now)


class QuotaPoller:
    """Polls every enabled OAuth account's usage endpoint into the broker's headroom."""

    def __init__(
        self,
        settings: OAuthSettings,
        session: aiohttp.ClientSession,
        broker: Broker,
        keeper: TokenKeeper,
        accounts: Callable[[], Iterable[Account]],
        *,
        clock: Clock = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.broker = broker
        self.keeper = keeper
        self.accounts = accounts
        self.clock = clock
        self.rng = rng or random.Random()
        self._next_at: dict[str, float] = {}
        self._last_at: dict[str, float] = {}

    def due(self, now: float) -> list[Account]:
        """Accounts to poll now: their jittered turn came, or they were rate-limited since."""
        found = []
        for account in self.accounts():
            if not account.is_oauth or account.disabled:
                continue
            state = self.broker.state(account.id)
            if state.needs_reauth:
                continue
            last = self._last_at.get(account.id)
            is_turn = now >= self._next_at.get(account.id, 0.0)
            was_limited = (
                last is not None
                and state.last_error_at > last
                and state.cooling(now) > 0
                and now - last >= AFTER_429_MIN_GAP_S
            )
            if is_turn or was_limited:
                found.append(account)
        return found

    async def poll(self, account: Account) -> list[Headroom]:
        """Poll one account now and hand its windows to the broker; [] when the poll failed."""
        now = self.clock()
        self._last_at[account.id] = now
        self._next_at[account.id] = now + self.settings.usage_poll_s * self.rng.uniform(0.8, 1.2)
        try:
            fresh = await self.keeper.fresh(account)
            try:
                windows = await fetch_usage(self.session, fresh, self.settings, now)
            except UpstreamError as exc:
                if exc.status != 401:
                    raise
                fresh = await self.keeper.refresh_after_401(fresh, fresh.access_token)
                windows = await fetch_usage(self.session, fresh, self.settings, now)
        except UpstreamError as exc:
            log.info("%s: usage poll failed: %s", account.id, exc.message)
            return []
        if windows:
            self.broker.update_headroom(account.id, windows)
        return windows

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; ``usage_poll_s = 0`` turns polling off."""
        if self.settings.usage_poll_s <= 0:
            return
        tick_s = min(_TICK_S, self.settings.usage_poll_s)
        while not stop.is_set():
            due = self.due(self.clock())
            if due:
                async with asyncio.TaskGroup() as tasks:
                    for account in due:
                        tasks.create_task(self.poll(account))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_s)
