"""Leases held by other instances (the shared store's view) weigh in scoring like our own."""

from __future__ import annotations

from proxygate.broker import Outcome
from proxygate.config import RoutingConfig
from tests.conftest import FakeClock
from tests.unit.broker.leases import SONNET, served
from tests.unit.broker.test_scenarios import account, broker


def test_accounts_busy_on_other_instances_are_drained_last(clock: FakeClock) -> None:
    b = broker([account("a"), account("b"), account("c")], clock)
    b.set_peer_leases({"a": 3, "c": 2})
    assert served(b, n=3) == ["b", "b", "b"]
    assert [b.state(i).peer_inflight for i in "abc"] == [3, 0, 2]


def test_a_peer_view_without_an_account_clears_its_count(clock: FakeClock) -> None:
    b = broker([account("a"), account("b")], clock)
    b.set_peer_leases({"a": 5})
    b.set_peer_leases({})  # the instance holding them died: its leases expired in the store
    assert b.state("a").peer_inflight == 0
    assert sorted(served(b, n=2)) == ["a", "b"]


def test_least_used_counts_the_other_instances_too(clock: FakeClock) -> None:
    b = broker([account("a"), account("b")], clock, configs={"default": RoutingConfig(strategy="least-used")})
    b.set_peer_leases({"a": 1})
    assert served(b, n=2) == ["b", "b"]


def test_leases_are_this_process_in_flight_per_account(clock: FakeClock) -> None:
    b = broker([account("a"), account("b")], clock)
    b.set_peer_leases({"b": 4})  # the others' leases are not ours to publish
    held = [b.acquire(SONNET), b.acquire(SONNET), b.acquire(SONNET)]
    assert b.leases() == {"a": 3}
    for lease in held:
        lease.release(Outcome.ok())
    assert b.leases() == {}
    assert b.describe(account("b"), clock())["peer_inflight"] == 4
