"""The tenant book with a fake clock: keys, sliding windows, day and month limits, settings."""

from __future__ import annotations

from dataclasses import replace

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxygate.call import Call
from proxygate.config import RoutingSettings, Settings
from proxygate.errors import ClientError, ModelNotAllowed, TenantLimitReached
from proxygate.features.tenants import Tenant, TenantBook, changed, created, key_hash, rotated
from proxygate.wire.ir import Format
from tests.conftest import FakeClock

DAY_START = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # a UTC midnight


def book_with(clock: FakeClock, proxy_token: str = "", **limits: object) -> tuple[TenantBook, str]:
    tenant, key = created("alice", limits, now=clock(), routes={"default", "subs"})
    book = TenantBook(Settings(proxy_token=proxy_token), clock=clock)
    book.replace_all({"alice": tenant})
    return book, key


def test_keys_are_stored_as_hashes_and_shown_by_prefix() -> None:
    tenant, key = created("alice", {}, now=0.0, routes=None)
    assert key.startswith("pgk_") and len(key) == 47
    assert tenant.key_sha256 == key_hash(key) and key not in str(tenant.to_json())
    assert tenant.key_hint == key[:8] + "…"
    assert Tenant.from_json(tenant.to_json()) == tenant
    again, new_key = rotated(tenant)
    assert new_key != key and again.key_sha256 == key_hash(new_key)


def test_authenticate() -> None:
    clock = FakeClock()
    book, key = book_with(clock)
    assert book.authenticate(key) == "alice"
    assert book.authenticate(key + "x") is None
    assert book.authenticate("") is None  # tenants and no proxy_token: a key is required
    with_owner, _ = book_with(clock, proxy_token="owner")
    assert with_owner.authenticate("owner") == ""
    assert with_owner.authenticate("owner2") is None
    empty = TenantBook(Settings(), clock=clock)
    assert empty.authenticate("") == ""


def test_rpm_is_a_sliding_window_that_refusals_do_not_fill() -> None:
    clock = FakeClock()
    book, _ = book_with(clock, rpm=3)
    for _ in range(3):
        book.admit("alice")
        book.settle("alice", 0, None, admitted=True)
        clock.advance(15)
    for _ in range(5):
        with pytest.raises(
            TenantLimitReached, match=r"^tenant 'alice': 3 requests per minute reached \(rpm\)$"
        ) as exc:
            book.admit("alice")
    assert exc.value.retry_after_s == 15.0  # the first was accepted 45 s ago
    clock.advance(15)
    book.admit("alice")


def test_tpm_waits_until_enough_tokens_left_the_window() -> None:
    clock = FakeClock()
    book, _ = book_with(clock, tpm=1000)
    for tokens in (600, 300, 400):
        book.admit("alice")
        book.settle("alice", tokens, None, admitted=True)
        clock.advance(10)
    with pytest.raises(TenantLimitReached) as exc:
        book.admit("alice")
    assert exc.value.retry_after_s == 30.0  # 1300 now; under 1000 once the 600 (30 s old) leaves
    clock.advance(30)
    book.admit("alice")


def test_tpm_window_keeps_one_entry_a_second_whatever_the_request_rate() -> None:
    clock = FakeClock()
    book, _ = book_with(clock, tpm=10**9)
    for _ in range(120):  # two minutes at 100 answers a second
        for _ in range(100):
            book.admit("alice")
            book.settle("alice", 7, None, admitted=True)
            clock.advance(0.01)
    usage = book.counters("alice")
    assert len(usage.settled) <= 61
    assert usage.settled_tokens == sum(e.tokens for e in usage.settled) >= 60 * 100 * 7


def test_tpm_tokens_of_one_second_leave_with_its_newest() -> None:
    clock = FakeClock(1_800_000_000.0)
    book, _ = book_with(clock, tpm=1000)
    book.admit("alice")
    book.settle("alice", 600, None, admitted=True)
    clock.advance(0.5)
    book.admit("alice")
    book.settle("alice", 500, None, admitted=True)  # same second: 1100 leave together
    with pytest.raises(TenantLimitReached) as exc:
        book.admit("alice")
    assert exc.value.retry_after_s == 60.0
    clock.advance(59.9)  # the first answer is 60.4 s old, the second 59.9 s: still counted
    with pytest.raises(TenantLimitReached):
        book.admit("alice")
    clock.advance(0.2)
    book.admit("alice")
    book.settle("alice", 5, None, admitted=True)
    newest = clock()
    clock.advance(-30)  # the clock stepped back: its answers join the newest second
    book.settle("alice", 5, None, admitted=True)
    assert [(e.tokens, e.newest) for e in book.counters("alice").settled] == [(10, newest)]


def test_concurrency_counts_requests_in_flight() -> None:
    book, _ = book_with(FakeClock(), concurrency=2)
    book.admit("alice")
    book.admit("alice")
    with pytest.raises(TenantLimitReached, match="in flight"):
        book.admit("alice")
    book.settle("alice", 10, None, admitted=True)
    book.admit("alice")


def test_daily_tokens_and_monthly_dollars_reset_at_their_boundaries() -> None:
    clock = FakeClock(DAY_START + 3600)
    book, _ = book_with(clock, daily_tokens=100, monthly_usd=1.0)
    book.admit("alice")
    book.settle("alice", 150, 0.6, admitted=True)
    with pytest.raises(TenantLimitReached, match="tokens per day") as exc:
        book.admit("alice")
    assert exc.value.retry_after_s == 23 * 3600
    clock.advance(23 * 3600)  # midnight UTC
    book.admit("alice")
    book.settle("alice", 10, 0.6, admitted=True)
    with pytest.raises(TenantLimitReached, match="USD per month"):
        book.admit("alice")
    assert book.report("alice")["usage"]["tokens_today"] == 10


def test_unknown_price_counts_no_dollars_and_tokens_still_apply() -> None:
    book, _ = book_with(FakeClock(), daily_tokens=100, daily_usd=0.01)
    book.admit("alice")
    book.settle("alice", 200, None, admitted=True)
    with pytest.raises(TenantLimitReached, match="tokens per day"):
        book.admit("alice")
    assert book.report("alice")["usage"]["usd_today"] == 0.0


def test_models_and_aliases() -> None:
    clock = FakeClock()
    tenant, _ = created(
        "alice",
        {"models": "claude-haiku-*, gpt-4o-mini", "aliases": "fast=claude-haiku-4-5"},
        now=0,
        routes=None,
    )
    routing = RoutingSettings(aliases={"mini": "gpt-4o-mini", "big": "claude-opus-4"})
    book = TenantBook(Settings(routing=routing), clock=clock)
    book.replace_all({"alice": tenant})
    assert book.resolve_model("alice", "fast") == "claude-haiku-4-5"
    assert book.resolve_model("alice", "mini") == "mini"  # the global alias leads inside the globs
    with pytest.raises(ModelNotAllowed, match=r"may not use model 'big'"):
        book.resolve_model("alice", "big")
    assert book.resolve_model("", "big") == "big"  # the owner: no restriction


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rpm": -1}, r"rpm must be 0 \(no limit\) or more, got -1"),
        ({"tpm": "many"}, "tpm must be a number"),
        ({"share": 0}, "share must be positive"),
        ({"route": "nope"}, "no routing config 'nope'"),
        ({"models": 3}, "models must be a list of globs"),
        ({"aliases": "a-b"}, "aliases must be FROM=TO pairs"),
        ({"color": "red"}, "unknown tenant setting 'color'"),
        ({"daily_usd": float("nan")}, r"daily_usd must be 0 \(no limit\) or more, got nan"),
    ],
)
def test_bad_settings_are_refused_with_their_name(changes: dict[str, object], message: str) -> None:
    tenant, _ = created("alice", {}, now=0, routes=None)
    with pytest.raises(ClientError, match=message):
        changed(tenant, changes, routes={"default"})


@pytest.mark.parametrize("name", ["", "-", "Alice", "a b", "x" * 65, "../etc"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ClientError, match="tenant name"):
        created(name, {}, now=0, routes=None)


def test_guardrails_and_capture_switches_round_trip_and_decide_per_tenant() -> None:
    on, _ = created("on", {"guardrails": True, "capture": "off"}, now=0.0, routes=None)
    plain, _ = created("plain", {}, now=0.0, routes=None)
    assert Tenant.from_json(on.to_json()) == on
    assert (on.view()["guardrails"], on.view()["capture"]) == ("on", "off")
    assert (plain.view()["guardrails"], plain.view()["capture"]) == ("inherit", "inherit")
    back = changed(on, {"guardrails": "inherit"}, routes=None)
    assert back.guardrails is None and Tenant.from_json(back.to_json()).guardrails is None
    with pytest.raises(ClientError, match="capture must be"):
        changed(on, {"capture": "yes"}, routes=None)

    book = TenantBook(Settings())
    book.replace_all({"on": on, "plain": plain})
    assert book.any_on("guardrails") and not book.any_on("capture")
    guard_on = book.switch("guardrails", False)
    capture_on = book.switch("capture", True)

    def call(tenant: str) -> Call:
        return Call(
            "id", Format.anthropic, CIMultiDictProxy(CIMultiDict()), {}, b"", "m", False, tenant=tenant
        )

    assert [guard_on(call(t)) for t in ("on", "plain", "")] == [True, False, False]
    assert [capture_on(call(t)) for t in ("on", "plain", "")] == [False, True, True]
    book.replace_all({"on": replace(on, guardrails=False), "plain": plain})  # live: the next request
    assert guard_on(call("on")) is False
    book.present = frozenset({"capture"})
    assert book.pending_start("on") == [] and book.report("on").get("applies_at_next_start") is None
    book.replace_all({"on": on})
    assert book.pending_start("on") == ["guardrails"]
