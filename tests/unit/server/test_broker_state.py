"""What the broker remembers across restarts, read back from a real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxygate.broker import Ask, Broker, Outcome
from proxygate.broker.cache import PERSISTED_EVENTS, CacheLost
from proxygate.config import BudgetSettings, RoutingSettings, Settings
from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.prices import load_prices
from proxygate.server.broker_state import CACHE_LOST_KEY, restore_broker, save_cache_lost, save_overage
from proxygate.store import LMDBStore, UsageRecord
from proxygate.store.base import CACHE_LOST
from proxygate.wire.ir import Format, Usage
from tests.conftest import FakeClock

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86400.0


def test_budgets_resume_with_this_days_and_this_months_tokens(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    for n, (account_id, age_s, route) in enumerate(
        [
            ("a", 0.0, ""),
            ("a", 3600.0, "work"),  # today, another route: still a's tokens
            ("a", 3 * DAY, ""),  # this month
            ("a", 15 * DAY, ""),  # December: not this month
            ("b", 0.0, ""),  # no budget
        ]
    ):
        store.record(
            UsageRecord(f"pg_{n}", NOW - age_s, account_id, "m", "chat", "chat", 200, 100, 10, route=route)
        )
    store.flush()
    budgets = {"a": BudgetSettings(daily_tokens=10_000)}
    accounts = [Account(i, "apikey", "openai", "http://x", ("*",), Format.chat) for i in ("a", "b")]
    broker = Broker(PoolSnapshot.of(accounts), RoutingSettings(), clock=FakeClock(NOW), budgets=budgets)
    restore_broker(broker, store, Settings(budgets=budgets))
    assert (broker.budgets.used_today("a", "2027-01-15"), broker.budgets.used_this_month("a", "2027-01")) == (
        220,
        330,
    )
    assert broker.budgets.used_this_month("b", "2027-01") == 0
    store.close()


def _claude_broker(store: LMDBStore, clock: FakeClock, tmp_path: Path) -> Broker:
    """A two-account broker wired to ``store`` the way server/app.py wires it."""
    accounts = [
        Account(i, "claude", "claude", "http://x", ("claude-*",), (Format.anthropic,), overage="allow")
        for i in ("a", "b")
    ]
    return Broker(
        PoolSnapshot.of(accounts),
        RoutingSettings(max_wait_s=0.0),
        clock=clock,
        prices=load_prices(tmp_path, {}),
        on_cache_lost=lambda lost: save_cache_lost(store, lost),
        on_overage=lambda account_id, requests: save_overage(store, account_id, requests),
    )


def _move(broker: Broker, conversation: str) -> CacheLost:
    """Serve ``conversation`` once with a 100k-token prefix, cool its account, and move it."""
    ask = Ask("claude-sonnet-4-5", Format.anthropic, conversation)
    lease = broker.acquire(ask)
    lease.release(Outcome.ok())
    prompt = Usage(input_tokens=10, cache_read_tokens=90_000, cache_write_tokens=9_990)
    broker.record_usage(lease.account.id, prompt, "claude-sonnet-4-5", conversation=conversation)
    broker.acquire(ask).release(Outcome.rate_limited(20.0))
    moved = broker.acquire(ask)
    moved.release(Outcome.ok())
    assert moved.cache_lost is not None
    return moved.cache_lost


def test_cache_lost_and_overage_counts_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = LMDBStore(tmp_path)
    before = _claude_broker(store, clock, tmp_path)
    lost = _move(before, "cc:session-1")
    for _ in range(3):
        before.observe("a", {"anthropic-ratelimit-unified-overage-in-use": "true"}, status=200)
    store.close()  # flushes what is queued, as a server's shutdown does

    store = LMDBStore(tmp_path)
    after = _claude_broker(store, clock, tmp_path)
    restore_broker(after, store, Settings())
    summary = after.cache.lost_summary()
    assert (summary["count"], summary["usd"]) == (1, pytest.approx(0.345))
    assert summary["recent"] == [lost.to_json()]
    assert after.describe(after.snapshot.by_id["a"], clock())["overage_requests"] == 3
    assert after.describe(after.snapshot.by_id["b"], clock())["overage_requests"] == 0

    clock.advance(60.0)  # the figures go on from the restored ones, and are saved again
    _move(after, "cc:session-2")
    after.observe("a", {"anthropic-ratelimit-unified-overage-in-use": "true"}, status=200)
    store.close()
    store = LMDBStore(tmp_path)
    again = _claude_broker(store, clock, tmp_path)
    restore_broker(again, store, Settings())
    assert again.cache.lost_count == 2 and again.cache.lost_usd == pytest.approx(0.69)
    assert [e["conversation"] for e in again.cache.lost_summary()["recent"]] == [
        "cc:session-2",
        "cc:session-1",
    ]
    assert again.describe(again.snapshot.by_id["a"], clock())["overage_requests"] == 4
    store.close()


def test_only_the_newest_cache_lost_events_are_kept_but_the_totals_count_all(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = LMDBStore(tmp_path)
    before = _claude_broker(store, clock, tmp_path)
    moves = PERSISTED_EVENTS + 5
    for n in range(moves):
        clock.advance(60.0)  # the cooled account is back for the next conversation
        _move(before, f"cc:session-{n}")
    store.close()

    store = LMDBStore(tmp_path)
    saved = store.get_states(CACHE_LOST)
    assert len(saved[CACHE_LOST_KEY]["events"]) == PERSISTED_EVENTS
    after = _claude_broker(store, clock, tmp_path)
    restore_broker(after, store, Settings())
    assert after.cache.lost_count == moves
    assert after.cache.lost_usd == pytest.approx(0.345 * moves)
    assert after.cache.lost_summary(recent=1)["recent"][0]["conversation"] == f"cc:session-{moves - 1}"
    assert after.cache.lost[0].conversation == f"cc:session-{moves - PERSISTED_EVENTS}"
    store.close()
