"""Cooldown maths (issue #3 §6): Retry-After wins; else 15 s doubling to 300 s; success clears."""

from __future__ import annotations

from proxygate.broker.state import AccountState, Outcome, apply_outcome, backoff_s

LIMITS = {"min_s": 15.0, "max_s": 300.0, "overload_s": 5.0}


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_s(n, 15, 300) for n in range(1, 8)] == [15, 30, 60, 120, 240, 300, 300]


def test_backoff_after_thousands_of_failures_stays_at_the_cap() -> None:
    """An account failing for days: 2 ** 1100 would not fit a float (found by bench/soak.py)."""
    assert backoff_s(1100, 0.05, 0.2) == 0.2
    assert backoff_s(10**6, 15, 300) == 300


def test_retry_after_wins_and_success_clears() -> None:
    state = AccountState()
    apply_outcome(state, Outcome.rate_limited(42.0), 100.0, **LIMITS)
    assert (state.cooling(100.0), state.failures) == (42.0, 1)
    apply_outcome(state, Outcome.error("500"), 200.0, **LIMITS)
    assert (state.cooling(200.0), state.failures) == (30.0, 2)
    assert apply_outcome(state, Outcome.ok(), 300.0, **LIMITS) is True
    assert (state.cooling(300.0), state.failures, state.cooldown_reason) == (0.0, 0, "")


def test_overload_is_short_and_does_not_grow_the_streak() -> None:
    state = AccountState()
    apply_outcome(state, Outcome.overloaded(), 0.0, **LIMITS)
    apply_outcome(state, Outcome.overloaded(), 0.0, **LIMITS)
    assert (state.cooling(0.0), state.failures) == (5.0, 0)


def test_model_scoped_cooldown_leaves_other_models() -> None:
    state = AccountState()
    apply_outcome(state, Outcome.rate_limited(60.0, model="claude-opus"), 0.0, **LIMITS)
    assert (state.cooling(1.0, "claude-opus"), state.cooling(1.0, "claude-haiku"), state.cooling(1.0)) == (
        59.0,
        0.0,
        0.0,
    )


def test_auth_failure_needs_reauth_and_client_errors_change_nothing() -> None:
    state = AccountState()
    assert apply_outcome(state, Outcome.client_error(), 0.0, **LIMITS) is False
    assert state == AccountState()
    apply_outcome(state, Outcome.auth_failed("401: invalid x-api-key"), 0.0, **LIMITS)
    assert (state.needs_reauth, state.cooling(0.0)) == ("401: invalid x-api-key", 0.0)
    assert AccountState.from_json(state.to_json()) == state
