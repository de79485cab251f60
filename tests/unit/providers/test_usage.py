"""Quota polling: usage bodies → Headroom windows, the poll schedule, a stale cooldown cleared."""

from __future__ import annotations

import random
from pathlib import Path

import aiohttp
import orjson

from proxygate.broker import Broker
from proxygate.broker.headroom import Headroom, parse_chatgpt_usage, parse_claude_usage
from proxygate.config import RoutingSettings
from proxygate.pool.files import PoolSnapshot, load_file
from proxygate.pool.records import Account
from proxygate.providers.oauth import TokenKeeper
from proxygate.server.quota_poll import QuotaPoller
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
