"""Fair shares of a subscription window, simulated with a fake clock (broker/fairshare.py)."""

from __future__ import annotations

from proxygate.broker.fairshare import ACTIVE_S, FairShare
from proxygate.broker.headroom import Headroom
from tests.conftest import FakeClock

FIVE_H = 5 * 3600.0
TOKENS_PER_REQUEST = 2000
WINDOW_TOKENS = 1_000_000
"How many tokens the simulated Max window holds: each request spends 0.2 % of it."


class Window:
    """A simulated 5-hour window: what proxygate's requests (and others) spend of it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.resets_at = clock() + FIVE_H
        self.used_tokens = 0

    def spend(self, tokens: int) -> None:
        self.used_tokens += tokens

    @property
    def used(self) -> float:
        return min(self.used_tokens / WINDOW_TOKENS, 1.0)

    def headroom(self) -> list[Headroom]:
        return [
            Headroom(
                "5h", 1.0 - self.used, self.resets_at, "test", self.clock(), kind="quota", window_s=FIVE_H
            )
        ]


def run(
    fair: FairShare,
    clock: FakeClock,
    window: Window,
    rates: dict[str, int],
    *,
    reserve: float = 0.0,
    steps: int = 2000,
    step_s: float = 5.0,
) -> dict[str, int]:
    """Each step every tenant tries ``rates[t]`` requests; returns the requests each got served."""
    served = dict.fromkeys(rates, 0)
    for _ in range(steps):
        for tenant, rate in rates.items():
            for _ in range(rate):
                fair.want(tenant, "max", clock())
                if fair.admits(tenant, "max", window.headroom(), clock(), reserve=reserve).admits:
                    window.spend(TOKENS_PER_REQUEST)
                    fair.record(tenant, "max", window.headroom(), TOKENS_PER_REQUEST, clock())
                    served[tenant] += 1
        clock.advance(step_s)
        if clock() >= window.resets_at:
            break
    return served


def test_two_equal_tenants_competing_get_equal_use_of_the_window() -> None:
    clock = FakeClock()
    fair = FairShare()
    fair.set_shares({"": 1.0, "alice": 1.0, "bob": 1.0})
    window = Window(clock)
    # alice's runaway agent asks five times as often as bob does
    served = run(fair, clock, window, {"alice": 5, "bob": 1})
    assert window.used >= 0.99  # nothing wasted
    assert abs(served["alice"] - served["bob"]) <= 0.1 * max(served.values())
    report = {r["tenant"]: r for r in fair.report("max", window.headroom(), clock())}
    assert abs(report["alice"]["use_pct"] - report["bob"]["use_pct"]) <= 10
    assert report["alice"]["share_pct"] == 50.0


def test_weights_split_the_window_by_share() -> None:
    clock = FakeClock()
    fair = FairShare()
    fair.set_shares({"": 1.0, "alice": 3.0, "bob": 1.0})
    window = Window(clock)
    served = run(fair, clock, window, {"alice": 1, "bob": 5})
    assert abs(served["alice"] / (served["alice"] + served["bob"]) - 0.75) <= 0.05


def test_alone_a_tenant_may_use_all_of_the_window() -> None:
    clock = FakeClock()
    fair = FairShare()
    fair.set_shares({"": 1.0, "alice": 1.0, "bob": 1.0})
    window = Window(clock)
    served = run(fair, clock, window, {"alice": 3})
    assert window.used == 1.0
    assert served["alice"] == WINDOW_TOKENS // TOKENS_PER_REQUEST


def test_a_reserve_of_20_pct_is_left_untouched_alone_and_competing() -> None:
    for rates in ({"alice": 4}, {"alice": 4, "bob": 2, "": 1}):
        clock = FakeClock()
        fair = FairShare()
        fair.set_shares({"": 1.0, "alice": 1.0, "bob": 1.0})
        window = Window(clock)
        run(fair, clock, window, rates, reserve=0.20)
        assert 0.79 <= window.used <= 0.80  # at most one request's share past the line, here none


def test_an_idle_tenants_share_returns_after_the_active_period() -> None:
    clock = FakeClock()
    fair = FairShare()
    fair.set_shares({"": 1.0, "alice": 1.0, "bob": 1.0})
    window = Window(clock)
    run(fair, clock, window, {"alice": 1, "bob": 1}, steps=50)  # both active: 10 % each
    run(fair, clock, window, {"alice": 5, "bob": 1}, steps=45)  # alice reaches her 50 %, bob at 19 %
    assert window.used < 0.75
    fair.want("bob", "max", clock())
    verdict = fair.admits("alice", "max", window.headroom(), clock())
    assert not verdict.admits
    assert verdict.retry_after_s == ACTIVE_S  # bob counts as idle after that long
    assert "fair share" in verdict.reason
    clock.advance(verdict.retry_after_s)
    assert fair.admits("alice", "max", window.headroom(), clock()).admits  # alone: work-conserving


def test_a_new_period_starts_a_new_ledger() -> None:
    clock = FakeClock()
    fair = FairShare()
    fair.set_shares({"": 1.0, "alice": 1.0, "bob": 1.0})
    window = Window(clock)
    run(fair, clock, window, {"alice": 5, "bob": 1}, steps=300)
    assert not fair.admits("alice", "max", window.headroom(), clock()).admits  # spent
    clock.now = window.resets_at + 1  # the window refilled
    fair.want("bob", "max", clock())
    assert fair.admits("alice", "max", window.headroom(), clock()).admits
    assert [(r["tenant"], r["use_pct"]) for r in fair.report("max", window.headroom(), clock())] == [
        ("bob", 0.0)
    ]


def test_unknown_amounts_and_api_windows_are_not_shared() -> None:
    fair = FairShare()
    fair.set_shares({"": 1.0, "alice": 1.0})
    now = 1000.0
    fair.want("", "k", now)
    windows = [
        Headroom("tokens", 0.0, now + 60, "anthropic-api", now, kind="rate"),
        Headroom("5h", None, now + 60, "anthropic-unified", now),
    ]
    assert fair.admits("alice", "k", windows, now).admits
