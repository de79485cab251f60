"""Issue 16's broker rules told with a fake clock: quarantine, reserve, overage, windows by length."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from proxygate.broker import Ask, Broker, Headroom, Outcome
from proxygate.broker.state import refusal_reason
from proxygate.config import RoutingSettings
from proxygate.errors import AllAccountsBusy
from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.prices import load_prices
from proxygate.wire.ir import Format, Usage
from tests.conftest import FakeClock
from tests.unit.broker.leases import SONNET, served


def account(account_id: str, **kw: Any) -> Account:
    return Account(account_id, "claude", "claude", "http://x", ("claude-*",), (Format.anthropic,), **kw)


def broker(
    accounts: list[Account], clock: FakeClock, events: list[tuple[str, str, str]] | None = None
) -> Broker:
    sink = None if events is None else lambda *e: events.append(e)
    return Broker(PoolSnapshot.of(accounts), RoutingSettings(), clock=clock, on_event=sink)


def unified(five_h: float, *, status: str = "allowed", overage: str | None = None) -> dict[str, str]:
    """A Claude subscription response's unified headers: 5-hour window utilisation (fraction)."""
    headers = {
        "anthropic-ratelimit-unified-5h-utilization": str(five_h),
        "anthropic-ratelimit-unified-5h-status": status,
        "anthropic-ratelimit-unified-5h-reset": "1800018000",
    }
    if overage is not None:
        headers["anthropic-ratelimit-unified-overage-status"] = overage
    return headers


def test_a_banned_account_gets_no_request_after_its_refusal_until_reset(clock: FakeClock) -> None:
    events: list[tuple[str, str, str]] = []
    b = broker([account("banned", priority=5), account("healthy")], clock, events)
    lease = b.acquire(Ask("claude-opus-4", Format.anthropic))
    assert lease.account.id == "banned"  # higher priority and no windows: tried first
    lease.release(Outcome.quarantined("permission_error: OAuth authentication is currently not allowed"))
    clock.advance(30 * 86400)  # no cooldown expires: a ban is not retried automatically
    assert Counter(served(b, n=200)) == {"healthy": 200}
    view = b.describe(b.snapshot.by_id["banned"], clock())
    assert view["state"] == "quarantined" and "permission_error" in view["reason"]
    assert events == [
        ("quarantined", "banned", "permission_error: OAuth authentication is currently not allowed")
    ]
    b.reset("banned")
    assert "banned" in b.eligible("claude-sonnet-4-5")


def test_quarantine_survives_a_restart_and_only_another_login_lifts_it(clock: FakeClock) -> None:
    b = broker([account("a", email="old@x.com", refresh_token="r1")], clock)
    b.acquire(SONNET).release(Outcome.quarantined("account_deactivated: gone"))
    persisted = b.state("a").to_json()
    again = broker([account("a", email="old@x.com", refresh_token="r1")], clock)
    again.restore({"a": type(b.state("a")).from_json(persisted)})
    with pytest.raises(AllAccountsBusy, match="quarantined"):
        again.acquire(SONNET)
    again.update_pool(PoolSnapshot.of([account("a", email="old@x.com", refresh_token="r2")]))
    assert again.eligible("claude-sonnet-4-5") == []  # the same banned login, its token refreshed
    again.update_pool(PoolSnapshot.of([account("a", email="new@x.com", refresh_token="r3")]))
    assert again.eligible("claude-sonnet-4-5") == ["a"]


def test_needs_reauth_and_a_spent_window_raise_one_event_each(clock: FakeClock) -> None:
    events: list[tuple[str, str, str]] = []
    b = broker([account("a"), account("b")], clock, events)
    lease = b.acquire(SONNET)
    lease.release(Outcome.auth_failed("401: invalid_grant"))
    spent = [Headroom("5h", 0.0, clock() + 3600, "anthropic-unified", clock(), is_rejected=True)]
    b.update_headroom("b", spent)
    b.update_headroom("b", spent)  # still spent: no second alert
    assert events == [
        ("needs_reauth", lease.account.id, "401: invalid_grant"),
        ("window_spent", "b", "window 5h is spent"),
    ]


def test_with_reserve_15_the_window_never_passes_85_percent_through_proxygate(clock: FakeClock) -> None:
    """Each request uses 1 % of the window; the provider reports utilisation after each one."""
    kept = account("kept", reserve_pct=15)
    b = broker([kept, account("other")], clock)
    used_pct = 70
    b.observe("kept", unified(used_pct / 100), status=200)  # urgent: drained first
    b.update_headroom("other", [Headroom("7d", 1.0, clock() + 7 * 86400, "anthropic-unified", clock())])
    seen: Counter[str] = Counter()
    for _ in range(100):
        lease = b.acquire(SONNET)
        seen[lease.account.id] += 1
        if lease.account.id == "kept":
            used_pct += 1
            b.observe("kept", unified(used_pct / 100), status=200)
        lease.release(Outcome.ok())
    assert used_pct == 85
    assert seen == {"kept": 15, "other": 85}
    view = b.describe(kept, clock())
    assert view["state"] == "held" and "reserve" in view["reason"] and view["reserve_pct"] == 15


def test_with_overage_never_an_account_living_on_overage_gets_nothing(clock: FakeClock) -> None:
    plan_only = account("plan-only", priority=5)  # overage defaults to "never"
    b = broker([plan_only, account("tight")], clock)
    b.observe("plan-only", unified(1.0, status="rejected", overage="allowed"), status=200)
    b.observe("tight", unified(0.985), status=200)  # near its own limit: still the only choice
    assert Counter(served(b, n=50)) == {"tight": 50}
    assert "overage" in b.describe(plan_only, clock())["reason"]


def test_overage_allow_serves_and_last_resort_waits_for_everything_else(clock: FakeClock) -> None:
    b = broker([account("allow", overage="allow", priority=5), account("last", overage="last-resort")], clock)
    for name in ("allow", "last"):
        b.observe(name, unified(1.0, status="rejected", overage="allowed"), status=200)
    assert Counter(served(b, n=10)) == {"allow": 10}
    lease = b.acquire(SONNET, exclude=["allow"])
    assert lease.account.id == "last"  # nothing else left: last resort
    lease.release(Outcome.ok())


def test_requests_answered_from_overage_are_counted(clock: FakeClock) -> None:
    b = broker([account("a", overage="allow")], clock)
    b.observe(
        "a", {"anthropic-ratelimit-unified-representative-claim": "seven_day_overage_included"}, status=200
    )
    b.observe("a", {"anthropic-ratelimit-unified-overage-in-use": "true"}, status=200)
    b.observe("a", {"anthropic-ratelimit-unified-representative-claim": "five_hour"}, status=200)
    assert b.describe(b.snapshot.by_id["a"], clock())["overage_requests"] == 2


def test_a_codex_weekly_window_in_the_primary_position_is_the_weekly_window(clock: FakeClock) -> None:
    codex = Account("c", "chatgpt", "chatgpt", "http://x", ("gpt-*",), (Format.responses,))
    b = Broker(PoolSnapshot.of([codex]), RoutingSettings(), clock=clock)
    weekly_only = {"x-codex-primary-used-percent": "60", "x-codex-primary-window-minutes": "10080",
                   "x-codex-primary-reset-after-seconds": "200000"}  # fmt: skip
    b.observe("c", weekly_only, status=200)
    both = {"x-codex-primary-used-percent": "10", "x-codex-primary-window-minutes": "300",
            "x-codex-primary-reset-after-seconds": "3000"}  # fmt: skip
    b.observe("c", both, status=200)  # the 5-hour window came back: it does not overwrite the weekly
    windows = b.state("c").windows
    assert sorted(windows) == ["5h", "7d"]
    assert (windows["7d"].fraction_left, windows["7d"].window_s) == (pytest.approx(0.4), 604800.0)
    assert (windows["5h"].fraction_left, windows["5h"].window_s) == (pytest.approx(0.9), 18000.0)


def _pinned_pair(clock: FakeClock, max_wait_s: float, tmp_path: Path) -> tuple[Broker, Ask, str]:
    b = Broker(
        PoolSnapshot.of([account("a"), account("b")]),
        RoutingSettings(max_wait_s=max_wait_s),
        clock=clock,
        prices=load_prices(tmp_path, {}),
    )
    ask = Ask("claude-sonnet-4-5", Format.anthropic, "cc:session-1")
    lease = b.acquire(ask)
    lease.release(Outcome.ok())
    prompt = Usage(input_tokens=10, cache_read_tokens=90_000, cache_write_tokens=9_990, output_tokens=50)
    b.record_usage(lease.account.id, prompt, "claude-sonnet-4-5", conversation=ask.pin_key)
    b.acquire(ask).release(Outcome.rate_limited(20.0))  # the pinned account cools for 20 s
    return b, ask, lease.account.id


def test_a_conversation_whose_account_cools_20s_waits_when_max_wait_is_30(
    clock: FakeClock, tmp_path: Path
) -> None:
    b, ask, home = _pinned_pair(clock, 30.0, tmp_path)
    assert b.pin_wait_s(ask) == 20.0
    clock.advance(20.0)  # the caller sleeps that long
    lease = b.acquire(ask)
    assert (lease.account.id, lease.cache_lost) == (home, None)
    assert b.cache.report()["lost_count"] == 0


def test_it_moves_when_max_wait_is_0_and_records_the_cache_lost(clock: FakeClock, tmp_path: Path) -> None:
    b, ask, home = _pinned_pair(clock, 0.0, tmp_path)
    assert b.pin_wait_s(ask) == 0.0
    lease = b.acquire(ask)
    assert lease.account.id != home and lease.cache_lost is not None
    lost = lease.cache_lost
    assert (lost.from_account, lost.to_account, lost.tokens) == (home, lease.account.id, 100_000)
    assert lost.cost_usd == pytest.approx(100_000 * (3.75 - 0.30) / 1e6)  # write − read, per the price table
    assert "cooling down 20s" in lost.reason
    report = b.cache.report()
    assert report["lost_count"] == 1 and report["lost_usd"] == pytest.approx(0.345)
    assert report["accounts"][home]["hit_rate"] == pytest.approx(0.9)
    (conversation,) = report["recent_conversations"]
    assert (conversation["account"], conversation["hit_rate"]) == (home, pytest.approx(0.9))


def test_a_cooldown_longer_than_max_wait_moves(clock: FakeClock, tmp_path: Path) -> None:
    b, ask, home = _pinned_pair(clock, 10.0, tmp_path)
    assert b.pin_wait_s(ask) == 0.0  # 20 s > 10 s: waiting costs more than the cache is worth here
    assert b.acquire(ask).account.id != home


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"type":"error","error":{"type":"permission_error","message":"x"}}', "permission_error"),
        (
            '{"error":{"message":"OAuth authentication is currently not allowed for this organization."}}',
            "oauth_authentication_is_currently_not_allowed_for_this_organization",
        ),
        ('{"error":{"message":"This organization has been disabled."}}', "organization_has_been_disabled"),
        ('{"error":{"code":"account_deactivated","message":"gone"}}', "account_deactivated"),
        ('{"detail":{"code":"deactivated_workspace"}}', "deactivated_workspace"),
        ('{"error":{"type":"authentication_error","message":"invalid x-api-key"}}', ""),
        ('{"error":{"message":"Request blocked by content policy"}}', ""),
    ],
)
def test_permanent_refusals_are_told_from_fixable_ones(body: str, reason: str) -> None:
    assert refusal_reason(body) == reason


def test_the_same_quota_headers_again_within_a_second_are_not_parsed_again(clock: FakeClock) -> None:
    b = broker([account("max")], clock)
    b.observe("max", unified(0.25), status=200)
    first = b.state("max").windows["5h"]
    clock.advance(0.5)
    b.observe("max", unified(0.25), status=200)  # the same words: the window stays as it was
    assert b.state("max").windows["5h"] is first
    b.observe("max", unified(0.5), status=200)  # new words count at once
    assert b.state("max").windows["5h"].fraction_left == pytest.approx(0.5)
    assert b.state("max").windows["5h"].observed_at == clock()
    clock.advance(0.5)
    b.observe("max", unified(0.5), status=429)  # a refusal is always read
    assert b.state("max").windows["5h"].observed_at == clock()
    clock.advance(0.2)
    b.observe("max", unified(0.5), status=200)
    clock.advance(1.0)
    b.observe("max", unified(0.5), status=200)  # a second later: observed anew
    assert b.state("max").windows["5h"].observed_at == clock()
