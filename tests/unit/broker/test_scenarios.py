"""The pure broker told as stories with a fake clock: draining, pinning, cooldown scope, routes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from proxygate.broker import Ask, Broker, Headroom, Outcome, conversation
from proxygate.config import BudgetSettings, RoutingConfig, RoutingSettings, TierSettings
from proxygate.errors import AllAccountsBusy, ConfigError
from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.wire.ir import Format
from tests.conftest import FakeClock
from tests.unit.broker.leases import SONNET, served


def account(
    account_id: str, *, kind: str = "claude", models: tuple[str, ...] = ("claude-*",), **kw: Any
) -> Account:
    fmt = (Format.anthropic,) if kind == "claude" or kw.pop("anthropic", False) else (Format.chat,)
    provider = {"claude": "claude", "chatgpt": "chatgpt"}.get(kind, "anthropic")
    return Account(account_id, kind, provider, "http://x", models, fmt, **kw)  # type: ignore[arg-type]


def broker(accounts: list[Account], clock: FakeClock, **routing: Any) -> Broker:
    budgets = routing.pop("budgets", None)
    return Broker(PoolSnapshot.of(accounts), RoutingSettings(**routing), clock=clock, budgets=budgets)


def window(name: str, left: float, resets_in_s: float, clock: FakeClock, **kw: Any) -> Headroom:
    return Headroom(name, left, clock() + resets_in_s, "anthropic-unified", clock(), **kw)


def test_five_hour_window_resetting_soon_is_drained_before_a_fresh_weekly_one(clock: FakeClock) -> None:
    b = broker([account("fresh"), account("expiring")], clock)
    b.update_headroom("fresh", [window("5h", 1.0, 5 * 3600, clock), window("7d", 1.0, 7 * 86400, clock)])
    b.update_headroom("expiring", [window("5h", 0.4, 20 * 60, clock), window("7d", 0.8, 3 * 86400, clock)])
    assert served(b, n=5) == ["expiring"] * 5
    clock.advance(21 * 60)  # its 5-hour window reset: now the other one's expires first
    b.update_headroom("expiring", [window("5h", 1.0, 5 * 3600, clock)])
    assert served(b, n=3) == ["fresh"] * 3


def test_an_account_at_98_percent_is_skipped_pre_emptively(clock: FakeClock) -> None:
    b = broker([account("hot"), account("cool")], clock)
    b.update_headroom("hot", [window("5h", 0.02, 600, clock)])  # would win on urgency alone
    b.update_headroom("cool", [window("5h", 0.5, 4 * 3600, clock)])
    assert served(b, n=3) == ["cool"] * 3
    lease = b.acquire(SONNET)
    assert b.acquire(SONNET, exclude=["cool"]).account.id == "hot"  # last resort, not refused
    lease.release(Outcome.ok())


def test_a_pinned_conversation_stays_for_100_turns_and_moves_once_on_failover(clock: FakeClock) -> None:
    b = broker([account(f"a{i}") for i in range(4)], clock)
    ask = Ask("claude-sonnet-4-5", Format.anthropic, "cc:session-1")
    first = served(b, ask)[0]
    other = [b.acquire(Ask("claude-sonnet-4-5", Format.anthropic, f"cc:other-{i}")) for i in range(6)]
    seen = served(b, ask, 100)
    assert seen == [first] * 100
    lease = b.acquire(ask)
    lease.release(Outcome.rate_limited(60))
    moved = served(b, ask, 10)
    assert moved[0] != first and moved == [moved[0]] * 10
    clock.advance(61)  # the old account is back, the conversation stays where its cache is warm
    assert served(b, ask, 3) == [moved[0]] * 3
    for lease in other:
        lease.release(Outcome.ok())


def test_a_pin_expires_after_its_ttl_without_turns(clock: FakeClock) -> None:
    b = broker([account("a"), account("b")], clock, pin_ttl_s=60)
    ask = Ask("claude-sonnet-4-5", Format.anthropic, "cc:s")
    first = served(b, ask)[0]
    clock.advance(59)
    assert served(b, ask) == [first]  # sliding: this turn keeps it another 60 s
    clock.advance(59)
    assert b.pins.get("cc:s", clock()) is not None
    clock.advance(61)
    assert b.pins.get("cc:s", clock()) is None


def test_64_simultaneous_new_conversations_spread(clock: FakeClock) -> None:
    b = broker([account(f"a{i}") for i in range(4)], clock)
    leases = [b.acquire(Ask("claude-sonnet-4-5", Format.anthropic, f"cc:new-{i}")) for i in range(64)]
    assert Counter(lease.account.id for lease in leases) == {"a0": 16, "a1": 16, "a2": 16, "a3": 16}
    for lease in leases:
        lease.release(Outcome.ok())


def test_first_turns_with_the_same_prompt_are_not_one_conversation(clock: FakeClock) -> None:
    body = {"system": "be brief", "messages": [{"role": "user", "content": "hi"}]}
    key, follows = conversation(Format.anthropic, {}, body)
    assert follows is False
    b = broker([account("a"), account("b")], clock)
    assert sorted(served(b, Ask("claude-sonnet-4-5", Format.anthropic, key, follows), 4)) == [
        "a",
        "a",
        "b",
        "b",
    ]
    second = {
        **body,
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "?"},
        ],
    }
    assert conversation(Format.anthropic, {}, second) == (key, True)


def test_model_scoped_cooldown_leaves_other_models_usable(clock: FakeClock) -> None:
    b = broker([account("max")], clock)
    opus = Ask("claude-opus-4-1", Format.anthropic)
    lease = b.acquire(opus)
    b.observe(
        "max",
        {
            "anthropic-ratelimit-unified-5h-status": "allowed",
            "anthropic-ratelimit-unified-5h-utilization": "0.3",
            "anthropic-ratelimit-unified-7d_oi-status": "rejected",
            "anthropic-ratelimit-unified-7d_oi-utilization": "1.0",
            "anthropic-ratelimit-unified-7d_oi-reset": str(int(clock() + 86400)),
        },
        status=429,
        model=lease.model,
    )
    lease.release(Outcome.rate_limited(30, reason="429"))
    state = b.state("max")
    assert (state.cooldown_until, state.model_cooldowns) == (0.0, {"opus": clock() + 86400})
    assert b.eligible("claude-sonnet-4-5") == ["max"]
    assert b.eligible("claude-opus-4-1") == []
    with pytest.raises(
        AllAccountsBusy,
        match=r"^every account serving 'claude-opus-4-1' is cooling down; the first is free in 86400s$",
    ):
        b.acquire(opus)


def test_account_wide_window_rejection_cools_until_its_reset_and_the_poller_clears_it(
    clock: FakeClock,
) -> None:
    b = broker([account("max")], clock)
    lease = b.acquire(SONNET)
    reset = clock() + 7835
    b.observe(
        "max",
        {
            "anthropic-ratelimit-unified-5h-status": "rejected",
            "anthropic-ratelimit-unified-5h-reset": str(int(reset)),
        },
        status=429,
    )
    lease.release(Outcome.rate_limited(60, reason="429: limit"))
    state = b.state("max")
    assert (state.cooldown_until, state.cooldown_window) == (reset, "5h")
    assert state.cooldown_reason == "429: limit (window 5h)"
    clock.advance(3600)  # the poller learns the window was in fact reset early
    b.update_headroom("max", [window("5h", 1.0, 5 * 3600, clock)])
    assert (state.cooldown_until, state.cooldown_window, b.eligible("claude-sonnet-4-5")) == (
        0.0,
        "",
        ["max"],
    )


def test_529_and_429_cooldowns_differ(clock: FakeClock) -> None:
    b = broker([account("a"), account("b")], clock, cooldown_min_s=15.0, overload_cooldown_s=5.0)
    b.acquire(SONNET, exclude=["b"]).release(Outcome.overloaded())
    b.acquire(SONNET, exclude=["a"]).release(Outcome.rate_limited())
    assert (b.state("a").cooling(clock()), b.state("b").cooling(clock())) == (5.0, 15.0)
    assert (b.state("a").failures, b.state("b").failures) == (0, 1)


def test_auth_failure_marks_needs_reauth_until_reset(clock: FakeClock) -> None:
    b = broker([account("a"), account("b")], clock)
    b.acquire(SONNET, exclude=["b"]).release(Outcome.auth_failed("401: invalid token"))
    assert b.eligible("claude-sonnet-4-5") == ["b"]
    assert b.describe(b.snapshot.by_id["a"], clock())["state"] == "needs re-auth"
    b.reset("a")
    assert b.eligible("claude-sonnet-4-5") == ["a", "b"]


def test_budget_aware_skips_an_over_budget_account(clock: FakeClock) -> None:
    configs = {"default": RoutingConfig(strategy="budget-aware")}
    budgets = {"cheap": BudgetSettings(daily_tokens=1000)}
    b = broker([account("cheap"), account("other")], clock, configs=configs, budgets=budgets)
    b.record_usage("cheap", 400)
    assert served(b) == ["other"]  # more budget left (no budget = untouched)
    b.record_usage("other", 10**6)
    b.record_usage("cheap", 600)
    assert b.eligible("claude-sonnet-4-5") == ["other"]
    clock.advance(86400)  # a new UTC day
    assert b.eligible("claude-sonnet-4-5") == ["cheap", "other"]


def test_tiers_and_remaps_pick_the_right_account_and_model(clock: FakeClock) -> None:
    cheap = RoutingConfig(
        strategy="priority",
        tiers={
            "opus": TierSettings(accounts=("claude-max-work", "claude-pro-home")),
            "haiku": TierSettings(accounts=("deepseek-1",), model="deepseek-chat"),
            "default": TierSettings(accounts=("claude-*",), fallback=("openrouter-1",)),
        },
    )
    accounts = [
        account("claude-pro-home"),
        account("claude-max-work"),
        account("deepseek-1", kind="apikey", models=("deepseek-*",)),
        account("openrouter-1", kind="apikey", models=("*",)),
    ]
    b = broker(
        accounts,
        clock,
        configs={"default": RoutingConfig(), "cheap": cheap},
        aliases={"gpt-5-codex": "claude-sonnet-4-5"},
    )
    b.use_route("cheap")
    picks = []
    for model in ("claude-opus-4-1", "claude-3-5-haiku-latest", "claude-sonnet-4-5", "gpt-5-codex"):
        lease = b.acquire(Ask(model, Format.anthropic))
        picks.append((lease.account.id, lease.model, lease.is_fallback))
        lease.release(Outcome.ok())
    assert picks == [
        ("claude-max-work", "claude-opus-4-1", False),
        ("deepseek-1", "deepseek-chat", False),
        ("claude-pro-home", "claude-sonnet-4-5", False),  # account-first, then pool order
        ("claude-pro-home", "claude-sonnet-4-5", False),  # the alias, then its tier
    ]
    for _ in range(2):  # both tier accounts rate-limited: the fallback chain serves
        b.acquire(Ask("claude-sonnet-4-5", Format.anthropic)).release(Outcome.rate_limited(60))
    lease = b.acquire(Ask("claude-sonnet-4-5", Format.anthropic))
    assert (lease.account.id, lease.is_fallback) == ("openrouter-1", True)
    assert b.route_label(failover=True) == "cheap/priority+failover"


def test_route_switch_applies_at_once_and_unknown_names_fail(clock: FakeClock) -> None:
    configs = {"default": RoutingConfig(), "rr": RoutingConfig(strategy="round-robin")}
    b = broker([account("a"), account("b")], clock, configs=configs)
    assert b.route_label() == "default/drain-aware"
    b.use_route("rr")
    assert (b.route_label(), served(b, n=4)) == ("rr/round-robin", ["b", "a", "b", "a"])
    with pytest.raises(ConfigError, match=r"^no routing config 'nope' \(configs: default, rr\)$"):
        b.use_route("nope")


def test_apikey_first_orders_keys_before_subscriptions(clock: FakeClock) -> None:
    accounts = [account("sub"), account("key", kind="apikey", anthropic=True)]
    assert served(broker(accounts, clock), n=2) == ["sub", "sub"]
    assert served(broker(accounts, clock, priority="apikey-first"), n=2) == ["key", "key"]
