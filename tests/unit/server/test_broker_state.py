"""What the broker remembers across restarts, read back from a real store."""

from __future__ import annotations

from pathlib import Path

from proxygate.broker import Broker
from proxygate.config import BudgetSettings, RoutingSettings, Settings
from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.server.broker_state import restore_broker
from proxygate.store import LMDBStore, UsageRecord
from proxygate.wire.ir import Format
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
