"""[budgets] in dollars: requests priced with the shared price table count against daily_usd /
monthly_usd; every strategy skips an account over them, budget-aware prefers the most left."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxygate.broker import Broker
from proxygate.config import BudgetSettings, RoutingConfig, RoutingSettings, Settings
from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.prices import PriceTable, load_prices
from proxygate.server.broker_state import restore_broker
from proxygate.store import LMDBStore, UsageRecord
from proxygate.wire.ir import Format, Usage
from tests.conftest import FakeClock
from tests.unit.broker.leases import served

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86_400.0

# 1,000 input + 500 output tokens of claude-sonnet-4-5: (1,000 × $3 + 500 × $15) / 1M = $0.0105.
TURN = Usage(input_tokens=1_000, output_tokens=500)
TURN_USD = 0.0105


@pytest.fixture
def prices(tmp_path: Path) -> PriceTable:
    return load_prices(tmp_path, {})


def account(account_id: str) -> Account:
    return Account(account_id, "apikey", "anthropic", "http://x", ("claude-*",), (Format.anthropic,))


def broker(
    clock: FakeClock, prices: PriceTable, budgets: dict[str, BudgetSettings], **routing: object
) -> Broker:
    snapshot = PoolSnapshot.of([account("cheap"), account("other")])
    return Broker(snapshot, RoutingSettings(**routing), clock=clock, budgets=budgets, prices=prices)  # type: ignore[arg-type]


def test_an_account_over_its_daily_dollars_is_skipped_until_the_next_utc_day(
    clock: FakeClock, prices: PriceTable
) -> None:
    b = broker(
        clock,
        prices,
        {"cheap": BudgetSettings(daily_usd=0.02)},
        configs={"default": RoutingConfig("priority")},
    )
    b.record_usage("cheap", TURN, "claude-sonnet-4-5-20250929")
    assert b.budgets.spent_today_usd("cheap", "2027-01-15") == pytest.approx(TURN_USD)
    assert b.eligible("claude-sonnet-4-5") == ["cheap", "other"]  # $0.0105 of $0.02
    b.record_usage("cheap", TURN, "claude-sonnet-4-5-20250929")
    assert b.eligible("claude-sonnet-4-5") == ["other"]  # $0.021: over
    assert b.describe(b.snapshot.by_id["cheap"], clock())["budget_left"] == 0.0
    clock.advance(DAY)
    assert b.eligible("claude-sonnet-4-5") == ["cheap", "other"]


def test_budget_aware_prefers_the_account_with_the_most_dollars_left(
    clock: FakeClock, prices: PriceTable
) -> None:
    budgets = {"cheap": BudgetSettings(monthly_usd=1.0), "other": BudgetSettings(monthly_usd=0.05)}
    b = broker(clock, prices, budgets, configs={"default": RoutingConfig("budget-aware")})
    b.record_usage("cheap", TURN, "claude-sonnet-4-5")  # 99 % left
    b.record_usage("other", TURN, "claude-sonnet-4-5")  # 79 % left
    assert served(b, n=2) == ["cheap", "cheap"]


def test_a_model_without_a_price_counts_tokens_and_no_dollars(clock: FakeClock, prices: PriceTable) -> None:
    budgets = {"cheap": BudgetSettings(daily_usd=0.001, daily_tokens=10_000)}
    b = broker(clock, prices, budgets)
    b.record_usage("cheap", TURN, "in-house-model")
    assert (
        b.budgets.used_today("cheap", "2027-01-15"),
        b.budgets.spent_today_usd("cheap", "2027-01-15"),
    ) == (
        1_500,
        0.0,
    )
    assert b.eligible("claude-sonnet-4-5") == ["cheap", "other"]


def test_dollar_budgets_resume_from_the_store_after_a_restart(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    for n, (age_s, cost) in enumerate([(0.0, 0.30), (3600.0, 0.25), (3 * DAY, 2.0), (15 * DAY, 50.0)]):
        store.record(
            UsageRecord(
                f"pg_{n}",
                NOW - age_s,
                "cheap",
                "claude-sonnet-4-5",
                "anthropic",
                "anthropic",
                200,
                input_tokens=10,
                cost_usd=cost,
            )
        )
    store.flush()
    budgets = {"cheap": BudgetSettings(daily_usd=0.5, monthly_usd=10.0)}
    b = Broker(
        PoolSnapshot.of([account("cheap"), account("other")]),
        RoutingSettings(),
        clock=FakeClock(NOW),
        budgets=budgets,
        prices=load_prices(tmp_path, {}),
    )
    restore_broker(b, store, Settings(budgets=budgets))
    store.close()
    assert b.budgets.spent_today_usd("cheap", "2027-01-15") == pytest.approx(0.55)
    assert b.budgets.spent_this_month_usd("cheap", "2027-01") == pytest.approx(2.55)  # not December's
    assert b.eligible("claude-sonnet-4-5") == ["other"]  # $0.55 of $0.50 today
