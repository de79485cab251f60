"""Issue 18: the last resort among cooling accounts, and one rotation per config × tier × model."""

from __future__ import annotations

from collections import Counter

from proxygate.broker import Ask, Outcome
from proxygate.broker.state import AccountState, apply_outcome
from proxygate.config import RoutingConfig
from proxygate.wire.ir import Format
from tests.conftest import FakeClock
from tests.unit.broker.leases import SONNET
from tests.unit.broker.test_scenarios import account, broker

HAIKU = Ask("claude-haiku-4-5", Format.anthropic)
LIMITS = {"min_s": 15.0, "max_s": 300.0, "overload_s": 5.0}


def test_a_known_reset_is_remembered_as_known() -> None:
    state = AccountState()
    apply_outcome(state, Outcome.rate_limited(2.0), 0.0, **LIMITS)
    assert state.cooldown_is_known
    apply_outcome(state, Outcome.error("500"), 0.0, **LIMITS)  # a longer guess replaces it
    assert (state.cooldown_is_known, state.cooling(0.0)) == (False, 30.0)
    apply_outcome(state, Outcome.ok(), 1.0, **LIMITS)
    assert not state.cooldown_is_known


def test_last_resort_takes_the_soonest_known_reset_and_skips_far_ones(clock: FakeClock) -> None:
    b = broker([account(n) for n in "abcd"], clock)
    for name, outcome in (
        ("a", Outcome.rate_limited(2.5)),  # known, within 3 s
        ("b", Outcome.rate_limited(30.0)),  # known, too far
        ("c", Outcome.rate_limited(1.0)),  # known, soonest
    ):
        lease = b.acquire(SONNET, exclude=[x for x in "abcd" if x != name])
        lease.release(outcome)
    lease, wait_s = b.last_resort(SONNET, exclude=["d"], within_s=3.0) or (None, 0.0)
    assert (lease and lease.account.id, wait_s) == ("c", 1.0)
    lease.release(Outcome.client_error())  # type: ignore[union-attr]
    lease, wait_s = b.last_resort(SONNET, exclude=["d", "c"], within_s=3.0) or (None, 0.0)
    assert (lease and lease.account.id, wait_s) == ("a", 2.5)
    lease.release(Outcome.client_error())  # type: ignore[union-attr]
    assert b.last_resort(SONNET, exclude=["d", "c", "a"], within_s=3.0) is None
    assert b.last_resort(SONNET, exclude=["d"], within_s=0.0) is None  # 0: never


def test_a_guessed_cooldown_is_tried_at_once_but_reauth_never(clock: FakeClock) -> None:
    b = broker([account("a"), account("b")], clock)
    b.acquire(SONNET, exclude=["b"]).release(Outcome.error("500"))  # a guessed 15 s
    b.acquire(SONNET, exclude=["a"]).release(Outcome.auth_failed("401"))
    lease, wait_s = b.last_resort(SONNET, exclude=[], within_s=3.0) or (None, 0.0)
    assert (lease and lease.account.id, wait_s) == ("a", 0.0)


def test_each_model_keeps_its_own_rotation(clock: FakeClock) -> None:
    for strategy in ("round-robin", "drain-aware"):
        b = broker([account("a"), account("b")], clock, configs={"default": RoutingConfig(strategy=strategy)})
        main = Counter()
        for i in range(8):
            for ask in (SONNET, HAIKU):
                lease = b.acquire(Ask(ask.model, ask.fmt, f"{ask.model}-{i}"))
                if ask is SONNET:
                    main[lease.account.id] += 1
                lease.release(Outcome.ok())
        assert max(main.values()) <= 6, (strategy, main)


def test_an_account_tried_in_this_request_returns_only_for_a_known_reset(clock: FakeClock) -> None:
    b = broker([account("a"), account("b")], clock)
    b.acquire(SONNET, exclude=["b"]).release(Outcome.rate_limited(1.0))
    b.acquire(SONNET, exclude=["a"]).release(Outcome.error("500"))
    lease, wait_s = b.last_resort(SONNET, exclude=[], tried=["a", "b"], within_s=3.0) or (None, 0.0)
    assert (lease and lease.account.id, wait_s) == ("a", 1.0)
    lease.release(Outcome.client_error())  # type: ignore[union-attr]
    assert b.last_resort(SONNET, exclude=["a"], tried=["a", "b"], within_s=3.0) is None
