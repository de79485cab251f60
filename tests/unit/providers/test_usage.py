"""Quota polling: usage bodies → Headroom windows, the poll schedule, a stale cooldown cleared."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxygate.broker import Ask, Broker, Outcome
from proxygate.broker.headroom import Headroom, parse_chatgpt_usage, parse_claude_usage
from proxygate.config import RoutingSettings
from proxygate.pool.files import PoolSnapshot, load_file
from proxygate.pool.records import Account
from proxygate.providers.oauth import TokenKeeper
from proxygate.server import quota_poll
from proxygate.server.quota_poll import STALE_CHECK_S, QuotaPoller
from proxygate.wire.ir import Format
from tests import oauth_fakes
from tests.conftest import FakeClock
from tests.oauth_fakes import FakeAuthServer, oauth_account

auth_server = oauth_fakes.auth_server  # the fake authorization server fixture

NOW = 1_800_000_000.0


def test_claude_usage_windows() -> None:
    body = {
        "five_hour": {"utilization": 35.0, "resets_at": "2027-01-15T10:00:00Z"},
        "seven_day": {"utilization": 100.0, "resets_at": "2027-01-20T00:00:00+00:00"},
        "seven_day_opus": {"utilization": 12.5, "resets_at": None},
        "seven_day_oauth_apps": None,
        "extra_usage": {"is_enabled": False},
    }
    assert parse_claude_usage(body, NOW) == [
        Headroom("5h", 0.65, 1_800_007_200.0, "anthropic-usage", NOW, window_s=18000.0),
        Headroom("7d", 0.0, 1_800_403_200.0, "anthropic-usage", NOW, is_rejected=True, window_s=604800.0),
        Headroom("7d_opus", 0.875, None, "anthropic-usage", NOW, model="opus", window_s=604800.0),
    ]


def test_chatgpt_usage_windows() -> None:
    body = {
        "plan_type": "plus",
        "rate_limit": {
            "allowed": True,
            "limit_reached": False,
            "primary_window": {"used_percent": 20, "limit_window_seconds": 18000, "reset_after_seconds": 600},
            "secondary_window": {
                "used_percent": 5,
                "limit_window_seconds": 604800,
                "reset_at": 1_800_100_000,
            },
        },
    }
    assert parse_chatgpt_usage(body, NOW) == [
        Headroom("5h", 0.8, NOW + 600, "codex-usage", NOW, window_s=18000.0),
        Headroom("7d", 0.95, 1_800_100_000.0, "codex-usage", NOW, window_s=604800.0),
    ]
    assert parse_chatgpt_usage({"rate_limit": None}, NOW) == []


def _chatgpt_account(tmp_path: Path) -> Account:
    path = tmp_path / "pool" / "chatgpt" / "dev@example.com.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(orjson.dumps(oauth_account("chatgpt", expires_in_s=10**9)))
    return load_file("chatgpt", path)


async def test_a_poll_updates_headroom_and_clears_a_cooldown_whose_window_reset(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    clock = FakeClock(NOW)
    account = _chatgpt_account(tmp_path)
    broker = Broker(PoolSnapshot.of([account]), RoutingSettings(), clock=clock)
    state = broker.state(account.id)
    state.cooldown_until, state.cooldown_reason, state.cooldown_window = (
        NOW + 5000,
        "429: usage limit",
        "primary",
    )
    auth_server.wham = {
        "rate_limit": {"primary_window": {"used_percent": 3, "reset_after_seconds": 18000}},
    }
    async with aiohttp.ClientSession() as session:
        keeper = TokenKeeper(auth_server.settings(), session, clock=clock)
        poller = QuotaPoller(auth_server.settings(), session, broker, keeper, lambda: [account], clock=clock)
        windows = await poller.poll(account)
    assert [w.key for w in windows] == ["primary"]
    assert state.windows["primary"].fraction_left == 0.97
    assert (state.cooldown_until, state.cooldown_window) == (0.0, "")
    sent = {k.lower(): v for k, v in auth_server.usage_requests[0].items()}
    assert (sent["authorization"], sent["chatgpt-account-id"]) == ("Bearer at-0", "acct-1")
    assert sent["user-agent"].startswith("codex_cli_rs/")


async def test_schedule_is_jittered_and_a_rate_limit_brings_the_next_poll_forward(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    clock = FakeClock(NOW)
    account = _chatgpt_account(tmp_path)
    broker = Broker(PoolSnapshot.of([account]), RoutingSettings(), clock=clock)
    settings = auth_server.settings(usage_poll_s=300.0)
    async with aiohttp.ClientSession() as session:
        keeper = TokenKeeper(settings, session, clock=clock)
        poller = QuotaPoller(
            settings, session, broker, keeper, lambda: [account], clock=clock, rng=random.Random(7)
        )
        assert poller.due(clock()) == [account]  # first poll right away
        await poller.poll(account)
        assert poller.due(clock()) == []
        clock.advance(31)
        state = broker.state(account.id)
        state.last_error_at, state.cooldown_until = clock(), clock() + 600  # a 429 just now
        assert poller.due(clock()) == [account]
        await poller.poll(account)
        state.last_error_at = 0.0
        clock.advance(300 * 1.2 + 1)  # past the latest jittered turn
        assert poller.due(clock()) == [account]
        state.needs_reauth = "refresh refused"
        assert poller.due(clock()) == []
    assert len(auth_server.usage_requests) == 2


def _claude_account(tmp_path: Path, email: str = "dev@example.com") -> Account:
    path = tmp_path / "pool" / "claude" / f"{email}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(oauth_account("claude", email=email, expires_in_s=10**9)))
    return load_file("claude", path)


def _five_hour(used_pct: float, resets_in_s: float) -> dict[str, object]:
    return {"five_hour": {"utilization": used_pct, "resets_at": NOW + resets_in_s}}


async def test_a_6_hour_cooldown_is_lifted_within_one_poll_after_the_usage_endpoint_shows_a_reset(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    clock = FakeClock(NOW)
    account = _claude_account(tmp_path)
    broker = Broker(PoolSnapshot.of([account]), RoutingSettings(), clock=clock)
    lease = broker.acquire(Ask("claude-sonnet-4-5", Format.anthropic))
    lease.release(Outcome.rate_limited(6 * 3600.0, reason="429: rate limited"))  # a Retry-After of 6 h
    auth_server.claude_usage = _five_hour(100.0, 6 * 3600)
    settings = auth_server.settings(usage_poll_s=3600.0)
    async with aiohttp.ClientSession() as session:
        keeper = TokenKeeper(settings, session, clock=clock)
        poller = QuotaPoller(settings, session, broker, keeper, lambda: [account], clock=clock)
        await poller.poll(account)
        assert broker.state(account.id).cooling(clock()) > 5 * 3600  # the provider agrees: still spent
        clock.advance(STALE_CHECK_S - 1)
        assert poller.due(clock()) == []
        clock.advance(1)
        assert poller.due(clock()) == [account]  # long cooldowns are checked more often than usage_poll_s
        auth_server.claude_usage = _five_hour(2.0, 5 * 3600)  # reset early (reset credits)
        await poller.poll(account)
    assert broker.state(account.id).cooling(clock()) == 0.0
    assert broker.eligible("claude-sonnet-4-5") == [account.id]


async def test_a_short_cooldown_is_left_to_run_out(tmp_path: Path, auth_server: FakeAuthServer) -> None:
    clock = FakeClock(NOW)
    account = _claude_account(tmp_path)
    broker = Broker(PoolSnapshot.of([account]), RoutingSettings(), clock=clock)
    broker.acquire(Ask("claude-sonnet-4-5", Format.anthropic)).release(Outcome.rate_limited(120.0))
    auth_server.claude_usage = _five_hour(2.0, 5 * 3600)
    async with aiohttp.ClientSession() as session:
        settings = auth_server.settings()
        poller = QuotaPoller(settings, session, broker, TokenKeeper(settings, session, clock=clock),
                             lambda: [account], clock=clock)  # fmt: skip
        await poller.poll(account)
    assert broker.state(account.id).cooling(clock()) == 120.0  # a burst 429: not a stale window


async def test_a_429_from_the_usage_endpoint_backs_off_and_never_marks_the_account(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    clock = FakeClock(NOW)
    account = _claude_account(tmp_path)
    broker = Broker(PoolSnapshot.of([account]), RoutingSettings(), clock=clock)
    auth_server.usage_statuses = [429, 429]
    settings = auth_server.settings(usage_poll_s=10.0)
    async with aiohttp.ClientSession() as session:
        keeper = TokenKeeper(settings, session, clock=clock)
        poller = QuotaPoller(settings, session, broker, keeper, lambda: [account], clock=clock)
        assert await poller.poll(account) == []
        state = broker.state(account.id)
        assert (state.needs_reauth, state.quarantined, state.cooling(clock()), state.last_error_at) == (
            "",
            "",
            0,
            0,
        )
        clock.advance(59)
        assert poller.due(clock()) == []  # its turn (10 s) came, but the endpoint asked for less
        clock.advance(1)
        assert poller.due(clock()) == [account]
        await poller.poll(account)
        clock.advance(119)
        assert poller.due(clock()) == []  # doubled
        clock.advance(1)
        assert poller.due(clock()) == [account]
        auth_server.claude_usage = _five_hour(10.0, 3600)
        assert [w.key for w in await poller.poll(account)] == ["5h"]
    assert broker.eligible("claude-sonnet-4-5") == [account.id]


async def test_polls_across_accounts_are_one_at_a_time_and_spaced(
    tmp_path: Path, auth_server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quota_poll, "POLL_SPACING_S", 0.2)
    accounts = [_claude_account(tmp_path, f"dev{i}@example.com") for i in range(3)]
    broker = Broker(PoolSnapshot.of(accounts), RoutingSettings(), clock=time.time)
    auth_server.claude_usage = _five_hour(10.0, 3600)
    settings = auth_server.settings(usage_poll_s=3600.0)
    stop = asyncio.Event()

    async def stop_after_three() -> None:
        while len(auth_server.usage_times) < 3:  # noqa: ASYNC110 - the fake server has no event to wait on
            await asyncio.sleep(0.05)
        stop.set()

    async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as tasks:
        poller = QuotaPoller(settings, session, broker, TokenKeeper(settings, session), lambda: accounts)
        tasks.create_task(poller.run(stop))
        tasks.create_task(stop_after_three())
    times = auth_server.usage_times
    assert len(times) == 3
    assert all(later - earlier >= 0.2 for earlier, later in itertools.pairwise(times))
