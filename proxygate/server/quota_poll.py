"""Quota polling: every OAuth account's usage endpoint, on a jittered schedule, into headroom.

``QuotaPoller`` polls every OAuth account every ``usage_poll_s`` (±20 % jitter, so a pool's
polls do not line up), again soon after the account was rate-limited, and every
``STALE_CHECK_S`` while it cools down for more than five minutes: a cooldown is a hypothesis,
and one the provider's own numbers refute (an early reset, reset credits) is lifted
(``Broker.update_headroom``, ``Broker.lift_stale_cooldown``).

Polls are gentle (simultaneous polls of many accounts have got tokens revoked elsewhere): one
at a time, ``POLL_SPACING_S`` apart across the pool, and a 429 from a usage endpoint backs that
account's polls off (doubling up to an hour) without touching the account's own state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable

import aiohttp

from proxygate.broker import Broker
from proxygate.broker.broker import STALE_COOLDOWN_S
from proxygate.broker.headroom import Headroom, parse_chatgpt_usage, parse_claude_usage
from proxygate.config import OAuthSettings
from proxygate.errors import UpstreamError
from proxygate.pool.records import Account
from proxygate.providers.oauth import TokenKeeper
from proxygate.providers.usage import fetch_usage

log = logging.getLogger("proxygate.usage")

Clock = Callable[[], float]

# After a 429, poll again once this much time has passed since the last poll (the usage
# endpoints are themselves rate-limited, peers.md §3.1).
AFTER_429_MIN_GAP_S = 30.0
STALE_CHECK_S = 120.0
"While a cooldown of more than five minutes lasts, its account's usage is checked this often."
POLL_SPACING_S = 2.0
"At most one usage poll this often across the whole pool."
BACKOFF_MIN_S = 60.0
BACKOFF_MAX_S = 3600.0
_TICK_S = 5.0


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
        self._backoff_until: dict[str, float] = {}
        self._refusals: dict[str, int] = {}
        "Consecutive 429s from the account's usage endpoint (drives the backoff)."

    def due(self, now: float) -> list[Account]:
        """Accounts to poll now: their jittered turn came, or they were rate-limited since."""
        found = []
        for account in self.accounts():
            if not account.is_oauth or account.disabled:
                continue
            state = self.broker.state(account.id)
            if state.needs_reauth or state.quarantined or now < self._backoff_until.get(account.id, 0.0):
                continue
            last = self._last_at.get(account.id)
            is_turn = now >= self._next_at.get(account.id, 0.0)
            was_limited = (
                last is not None
                and state.last_error_at > last
                and state.cooling(now) > 0
                and now - last >= AFTER_429_MIN_GAP_S
            )
            is_stale = (
                last is not None
                and now - last >= STALE_CHECK_S
                and (
                    state.cooling(now) > STALE_COOLDOWN_S
                    or any(until - now > STALE_COOLDOWN_S for until in state.model_cooldowns.values())
                )
            )
            if is_turn or was_limited or is_stale:
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
                data = await fetch_usage(self.session, fresh, self.settings)
            except UpstreamError as exc:
                if exc.status != 401:
                    raise
                fresh = await self.keeper.refresh_after_401(fresh, fresh.access_token)
                data = await fetch_usage(self.session, fresh, self.settings)
        except UpstreamError as exc:
            if exc.status == 429:  # the usage endpoint's own limit: poll less, the account is fine
                refusals = self._refusals[account.id] = self._refusals.get(account.id, 0) + 1
                wait_s = min(BACKOFF_MIN_S * 2 ** min(refusals - 1, 16), BACKOFF_MAX_S)
                self._backoff_until[account.id] = now + wait_s
                log.info("%s: usage endpoint rate-limited; next poll in %.0fs", account.id, wait_s)
            else:
                log.info("%s: usage poll failed: %s", account.id, exc.message)
            return []
        self._refusals.pop(account.id, None)
        parse = parse_chatgpt_usage if account.kind == "chatgpt" else parse_claude_usage
        windows = parse(data, now)
        if windows:
            self.broker.update_headroom(account.id, windows)
            if lifted := self.broker.lift_stale_cooldown(account.id, windows):
                log.warning("%s: usage shows headroom: lifted %s", account.id, lifted)
        return windows

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; ``usage_poll_s = 0`` turns polling off."""
        if self.settings.usage_poll_s <= 0:
            return
        tick_s = min(_TICK_S, self.settings.usage_poll_s)
        while not stop.is_set():
            for account in self.due(self.clock()):  # one at a time, spaced: never a burst
                await self.poll(account)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_SPACING_S)
                if stop.is_set():
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_s)
