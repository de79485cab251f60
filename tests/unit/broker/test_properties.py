"""Properties of the broker over random pools, health and traffic (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxygate.broker import Ask, Broker, Headroom, Outcome
from proxygate.config import RoutingConfig, RoutingSettings
from proxygate.errors import AllAccountsBusy, NoAccountForModel
from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.wire.ir import Format
from tests.conftest import FakeClock

Health = st.sampled_from(
    ["ready", "disabled", "cooling", "reauth", "model-cooling", "near-limit", "window-soon"]
)
STRATEGY = st.sampled_from(["drain-aware", "priority", "round-robin", "least-used", "budget-aware"])
ASK = Ask("claude-sonnet-4-5", Format.anthropic)


def build(healths: list[str], strategy: str, clock: FakeClock) -> Broker:
    accounts = [
        Account(
            f"a{i}",
            "claude",
            "claude",
            "http://x",
            ("claude-*",),
            (Format.anthropic,),
            disabled=h == "disabled",
        )
        for i, h in enumerate(healths)
    ]
    routing = RoutingSettings(configs={"default": RoutingConfig(strategy=strategy)})  # type: ignore[arg-type]
    b = Broker(PoolSnapshot.of(accounts), routing, clock=clock)
    now = clock()
    for i, h in enumerate(healths):
        state = b.state(f"a{i}")
        if h == "cooling":
            state.cooldown_until = now + 30
        elif h == "reauth":
            state.needs_reauth = "401"
        elif h == "model-cooling":
            state.model_cooldowns["sonnet"] = now + 30
        elif h == "near-limit":
            b.update_headroom(f"a{i}", [Headroom("5h", 0.01, now + 600, "t", now)])
        elif h == "window-soon":
            b.update_headroom(f"a{i}", [Headroom("5h", 0.5, now + 900, "t", now)])
    return b


HEALTHY = {"ready", "window-soon"}
USABLE = HEALTHY | {"near-limit"}


@settings(max_examples=300, deadline=None)
@given(st.lists(Health, min_size=1, max_size=12), STRATEGY, st.lists(st.integers(0, 11), max_size=4))
def test_a_healthy_eligible_account_is_chosen_when_one_exists(
    healths: list[str], strategy: str, busy: list[int]
) -> None:
    clock = FakeClock()
    b = build(healths, strategy, clock)
    held = [b.acquire(ASK) for _ in busy if any(h in USABLE for h in healths)]  # some load in flight
    try:
        lease = b.acquire(ASK)
    except (AllAccountsBusy, NoAccountForModel):
        assert not any(h in USABLE for h in healths)
        return
    chosen = healths[int(lease.account.id[1:])]
    assert chosen in USABLE
    if any(h in HEALTHY for h in healths):
        assert chosen in HEALTHY
    lease.release(Outcome.ok())
    for h in held:
        h.release(Outcome.ok())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(Health, min_size=1, max_size=8),
    STRATEGY,
    st.lists(
        st.tuples(
            st.booleans(), st.sampled_from(["ok", "rate_limited", "overloaded", "auth_failed", "error"])
        ),
        max_size=30,
    ),
)
def test_no_disabled_cooling_or_reauth_account_is_ever_chosen(
    healths: list[str], strategy: str, steps: list[tuple[bool, str]]
) -> None:
    clock = FakeClock()
    b = build(healths, strategy, clock)
    open_leases = []
    for is_acquire, kind in steps:
        if is_acquire or not open_leases:
            now = clock()
            try:
                lease = b.acquire(ASK)
            except (AllAccountsBusy, NoAccountForModel):
                continue
            state = b.state(lease.account.id)
            assert not lease.account.disabled
            assert not state.needs_reauth
            assert state.cooldown_until <= now
            assert state.model_cooldowns.get("sonnet", 0.0) <= now
            open_leases.append(lease)
        else:
            lease = open_leases.pop(0)
            lease.release(Outcome(kind, 30.0 if kind != "ok" else None, reason=kind))  # type: ignore[arg-type]
        clock.advance(1)
    for lease in open_leases:
        lease.release(Outcome.ok())
    assert all(b.state(f"a{i}").inflight == 0 for i in range(len(healths)))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.lists(st.integers(0, 40), min_size=1, max_size=40))
def test_every_lease_is_released_exactly_once(n_accounts: int, order: list[int]) -> None:
    clock = FakeClock()
    b = build(["ready"] * n_accounts, "drain-aware", clock)
    leases = [b.acquire(Ask("claude-sonnet-4-5", Format.anthropic, f"cc:{i}")) for i in range(len(order))]
    assert sum(b.state(f"a{i}").inflight for i in range(n_accounts)) == len(leases)
    for index in sorted(range(len(leases)), key=lambda i: order[i]):
        leases[index].release(Outcome.ok())
        try:
            leases[index].release(Outcome.ok())
            raise AssertionError("a second release must raise")
        except RuntimeError as exc:
            assert str(exc) == f"lease on {leases[index].account.id} released twice"
    assert [b.state(f"a{i}").inflight for i in range(n_accounts)] == [0] * n_accounts
