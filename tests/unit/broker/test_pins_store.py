"""Expired pins leave the store too: the pin database does not grow without bound."""

from __future__ import annotations

from proxygate.broker import Ask, Broker, Outcome
from proxygate.broker.pins import Pin
from proxygate.config import RoutingSettings
from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import parse_account
from proxygate.wire.ir import Format
from tests.conftest import FakeClock


def test_expired_pins_are_deleted_from_the_store_on_restore_and_on_reuse() -> None:
    clock = FakeClock()
    writes: list[tuple[str, dict[str, object] | None]] = []

    def sink(key: str, pin: Pin | None) -> None:
        writes.append((key, None if pin is None else pin.to_json()))

    account = parse_account({"provider": "anthropic", "api_key": "k"}, "apikey", default_id="a")
    broker = Broker(PoolSnapshot.of([account]), RoutingSettings(pin_ttl_s=60), clock=clock, on_pin=sink)
    broker.restore_pins(
        {
            "old": {"account_id": "a", "expires_at": clock() - 1},
            "live": {"account_id": "a", "expires_at": clock() + 30},
        }
    )
    assert writes == [("old", None)]
    clock.advance(31)
    writes.clear()
    broker.acquire(Ask("claude-x", Format.anthropic, "live")).release(Outcome.ok())
    # The stale entry is deleted first, then the conversation's new pin is written.
    assert writes == [("live", None), ("live", {"account_id": "a", "expires_at": clock() + 60})]


def test_a_new_key_in_the_file_clears_needs_reauth() -> None:
    clock = FakeClock()
    old = parse_account({"provider": "anthropic", "api_key": "sk-old"}, "apikey", default_id="a")
    broker = Broker(PoolSnapshot.of([old]), RoutingSettings(), clock=clock)
    broker.acquire(Ask("claude-x", Format.anthropic)).release(Outcome.auth_failed("401: invalid x-api-key"))
    broker.update_pool(PoolSnapshot.of([old]))  # an unrelated reload changes nothing
    assert broker.state("a").needs_reauth == "401: invalid x-api-key"
    new = parse_account({"provider": "anthropic", "api_key": "sk-new"}, "apikey", default_id="a")
    broker.update_pool(PoolSnapshot.of([new]))
    assert broker.state("a").needs_reauth == ""
    assert broker.acquire(Ask("claude-x", Format.anthropic)).account.api_key == "sk-new"
